"""Token ids (SPEC §1), and where the task families' extra tokens live.

SPEC fixes 0..14 and leaves 4 and 15..31 unused. The families take their new tokens
from the unused ones, so every default prompt keeps its ids: 4 is the bracket_depth
task token, 19 and 20 are `(` and `)`, and fillers past the fourth are drawn from
FILLER_POOL in order (E F G H = 15..18, then 21..31).

The induction family draws its pattern tokens from its own pool, INDUCTION_POOL:
21..31 first (no default task uses them), then 15..18, so its default prompts
(vocab 8: tokens 21..28) share no token with SPEC's two tasks but BOS.
"""

from __future__ import annotations

VOCAB_SIZE = 32  # SPEC's vocabulary; a family with its own (max_of_k) says so
PAD, BOS, TASK_QUOTE, TASK_BRACKET, TASK_DEPTH = 0, 1, 2, 3, 4
SINGLE_QUOTE, DOUBLE_QUOTE = 9, 10
OPEN_SQUARE, OPEN_CURLY, CLOSE_SQUARE, CLOSE_CURLY = 11, 12, 13, 14
OPEN_PAREN, CLOSE_PAREN = 19, 20
FILLER_POOL = (5, 6, 7, 8, 15, 16, 17, 18, *range(21, 32))
INDUCTION_POOL = (*range(21, 32), 15, 16, 17, 18)


def fillers(count: int) -> tuple[int, ...]:
    """The first `count` filler tokens (SPEC's A B C D first)."""
    return FILLER_POOL[:count]
