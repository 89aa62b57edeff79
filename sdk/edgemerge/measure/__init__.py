"""Measuring merged models: accuracy against the originals, latency against peers, what a file holds."""
