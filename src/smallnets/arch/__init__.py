"""Architectures as values: each family's paper table, its spec and the knobs that build it (no torch modules here)."""
