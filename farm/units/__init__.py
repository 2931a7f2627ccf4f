"""Units of work: a domain cut into index ranges, each decided whole where it lives.

A unit is (task spec, circuit hash, index range, optional cube). A solver actor
builds its evaluator once and decides its units by the sound screen and the exact
evaluator; a `UnitVerdict` is what travels back (counts, a digest of the decisions,
per-class tallies), never a row per input. The ledger persists verdicts as they
arrive, so a resubmitted job resumes per unit; `fold` turns a complete, exact cover of
the domain into the properties' results, and `cover_problems` says why a set of units
is not one. Imports `farm.verify` and below; Ray-free (the actors wrap it).
"""
