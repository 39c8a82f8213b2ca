"""The parts of benchmarks/search_vs_family.py (issue 14): arms, MOASHA, fronts, verdicts, runs."""
