"""Experiments: submission, state, results and the run life cycle workers drive."""
