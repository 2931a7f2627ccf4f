"""The farm's core library: one subpackage per concern, in layers.

Top to bottom: commands, actors (top level), trust, proofs, verify, encoders (top level),
discovery, screen, model, tasks, then errors and atomic. A module imports only from
layers below its own; pyproject.toml's import-linter contract enforces it in CI.
"""
