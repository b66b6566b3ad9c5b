"""Runs: the stages as plain functions (setup, fit, outcome, resume, sources, lock)."""
