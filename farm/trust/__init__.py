"""Trust: signed certificates, what binds them to the checkpoint and circuits, the Lean
export, and the checker that re-derives every claim it can.

May import `farm.verify` and below; never `actors` or `farm.commands`.
"""
