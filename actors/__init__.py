"""Ray actors: trainer/tracer, solvers, reducer, Lean and distillation checkers, each a
thin shell over the library.

May import `farm.trust`, `farm.verify` and below; only `farm.commands` imports them.
"""
