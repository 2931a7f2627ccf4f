"""Proofs that need no solver: arguments in exact arithmetic about one checkpoint.

Each proof is re-derivable number by number from the checkpoint it names, so a
checker recomputes it instead of trusting it. Sits above `farm.verify` and below
`farm.trust`: it reads models and tasks, and certificates may carry its results.
"""
