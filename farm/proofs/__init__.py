"""Proofs of accuracy over whole domains: not one query per input, but arguments that
cover every input of a task at once (brute force with rigorous float bounds, compact
proofs that use the mechanism), each ending in an exact count of correct inputs.

May import `farm.verify`, `encoders`, `farm.screen`, `farm.model`, `farm.tasks`,
`farm.errors` and `farm.atomic`.
"""
