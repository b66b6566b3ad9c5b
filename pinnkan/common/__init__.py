"""Helpers below every tier: atomic writes, config checks, signals, progress."""
