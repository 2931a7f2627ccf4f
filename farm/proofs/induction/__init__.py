"""Induction-head certificates bound to the weights.

For a prompt of the `induction` task and one attention head, a certificate states
the stripe (the query attends to the token after the previous occurrence of its
token with weight at least 1 − ε, from exact score margins), the copying (the
head's direct contribution raises the target's logit over every other candidate by
a stated margin, from bounds on its values) and the model's exact decision. It is
written in NFP's induction-certificate text format (`nfp`), so NFP's Lean checker
reads it, with the farm's binding to the checkpoint in `# farm` comment lines NFP
skips; `check` re-derives every line from the checkpoint and names any that differ.
Sparsemax models are run exactly; softmax ones are enclosed (`enclosure`), so every
number a certificate relies on is a sound bound. `domain` certifies a whole domain
in units of prompts (here, or on Ray actors) and reduces their aggregates.
"""
