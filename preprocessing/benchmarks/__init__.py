"""Benchmarks of preprocessing components on the real files of ``../shared``."""
