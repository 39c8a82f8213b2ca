"""The parts of benchmarks/gpu_check.py (issue 15), one module each, and what they share."""
