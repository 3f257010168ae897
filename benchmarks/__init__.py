"""Ratio benchmarks for the AlexNet pipeline: `python -m benchmarks.run` (see benchmarks/README.md)."""
