"""Verification: planning circuit claims into SMT queries, solving them on this machine
(`local`) or on Ray actors (`jobs`), and folding the answers into verdicts.

May import `encoders`, `farm.discovery`, `farm.model` and below; never `actors`, which
import it.
"""
