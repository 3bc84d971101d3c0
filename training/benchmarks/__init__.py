"""Training benchmarks (scripts that print figures; see README)."""
