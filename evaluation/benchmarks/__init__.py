"""Evaluation benchmarks."""
