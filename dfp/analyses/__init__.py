"""Analyses: the exact frequency analysis of uploaded representations, run by the workers."""
