"""Program distillation: from a circuit to a small Python program proved to decide as it does.

A circuit explains a behaviour as a graph; a user wants the algorithm. The package
searches a typed DSL of transformer motifs (`dsl`: token lookups, first/last
occurrence of a token class, running counters and their differences, parity,
threshold detectors, two-state machines) smallest program first (`search`), and
holds each candidate to the circuit's decisions on the task's whole domain
(`cegis`): the sound screen decides most inputs, the exact evaluator the rest, and
every disagreement is replayed exactly and joins the examples the next search must
fit. A candidate that agrees on every domain input is proved equal to the circuit's
decision on that (finite) domain; `record` writes the program with that proof.
`surrogate` is the route for a standard model (softmax, LayerNorm, GELU), which has
no exact semantics: agreement by the standard screen's sound bounds, then the
properties proved on the program, and the claim stated as exactly that.

Layering: may import `farm.verify`, `farm.screen`, `farm.model`, `farm.tasks` (the
import-linter contract in pyproject.toml); certificates and commands import it.
"""

from farm.distill.cegis import Check, Distillation, Judge, check_program, distill
from farm.distill.dsl import Program, compile_program, parse_program, program_source

__all__ = ["Check", "Distillation", "Judge", "Program", "check_program", "compile_program",
           "distill", "parse_program", "program_source"]
