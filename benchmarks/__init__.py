"""Side-by-side timings of this port against the PyTorch reference (run as `python -m benchmarks.<name>`)."""
