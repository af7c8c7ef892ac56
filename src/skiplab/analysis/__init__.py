"""Analyses of skip connections: gradient flow, lesions and paths, complexity tables."""
