"""Benchmark harness: latency, memory, size and accuracy against budgets (see issue: bench)."""
