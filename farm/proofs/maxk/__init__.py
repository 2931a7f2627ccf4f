"""Certified accuracy lower bounds for Max-of-K models (Gross et al. 2024).

`paths` splits a one-layer, one-head, attention-only model into its path tables
(attention scores, per-position logit rows) in float64 with rigorous error
bounds; `exact` decides one input exactly; `brute` proves the exact accuracy over
the whole domain; `compact` proves lower bounds from the tables alone at far fewer
FLOPs (the cubic strategy and a subcubic one that leans on the mechanism).
"""
