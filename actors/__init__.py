"""Ray actors: trainer/tracer, solvers, reducer and Lean, each a thin shell over the library.

May import `farm.trust`, `farm.verify` and below; only `farm.commands` imports them.
"""
