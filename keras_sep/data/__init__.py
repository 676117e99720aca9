"""Datasets: MUSDB18 through musdb, the built-in synthetic songs, and the segment sampler."""
