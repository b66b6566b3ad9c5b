"""Hydra entry points of the stages; the only package modules besides cli.py that know Hydra."""
