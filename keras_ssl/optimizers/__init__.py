"""Optimizers: LARS, warm-up + cosine schedule, learning-rate scaling."""
