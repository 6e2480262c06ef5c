"""Quantization: recipes as data, one backend per target, QAT grid handling."""
