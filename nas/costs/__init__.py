"""Costs of an architecture before any training: MACs/FLOPs, params, latency, memory; constraints on them."""
