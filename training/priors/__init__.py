"""Pretrained generative priors (StyleGAN2, …) loaded from their published layouts."""
