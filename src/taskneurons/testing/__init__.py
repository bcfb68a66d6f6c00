"""Test oracles: naive reference computations, shipped for tests and benchmarks only."""
