"""Losses: NT-Xent, PAWS, SemPPL."""
