"""Exact SMT-LIB2 encodings: the solver-neutral term layer, operators, circuits and
properties, the solver processes and the answer cache.

May import `farm.discovery`, `farm.model`, `farm.tasks` and below; never `farm.verify`.
"""
