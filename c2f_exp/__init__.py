"""Coarse-to-Fine RLHF experiment framework."""
