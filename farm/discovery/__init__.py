"""Circuit discovery: which edges of the model's graph a behaviour needs (ACDC).

May import `farm.model` and below; never the solvers.
"""
