"""Benchmarks (not tests): load-generator cost per message, paced capacity, measurement fidelity."""
