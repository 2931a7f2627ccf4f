"""Proofs that need no solver: arguments about one checkpoint, re-derivable number by
number from the checkpoint they name, so a checker recomputes them instead of trusting
them: induction-head certificates (`induction`), and accuracy over whole domains
(`maxk`: brute force with rigorous float bounds, compact proofs that use the
mechanism, each ending in an exact count of correct inputs). Sits above
`farm.verify` and below `farm.trust`: it reads models and tasks, and certificates
may carry its results.
"""
