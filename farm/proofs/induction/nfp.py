"""NFP's induction-certificate text format: writing it, reading it, and its rules.

The facts are `shared/docs/NFP_FORMAT.md`'s, read from NFP's sources (commit
3576f788). `parse` lexes as NFP does (no decimals, no trailing comments, one line
per index, every matrix and vector entry present) and `rejections` applies the
onehot-approx acceptance rules and gates of `nfp induction verify`, so a file
this module accepts is one NFP's checker accepts. Lines starting `# farm` carry
the farm's own fields; NFP skips them as comments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from farm.errors import FarmError

KIND = "onehot-approx"
FARM = "# farm "
Matrix = dict[tuple[int, int], Fraction]


@dataclass
class NfpCertificate:
    """One head on one prompt, as NFP's onehot-approx kind states it."""

    seq: int
    eps: Fraction
    margin: Fraction
    lo: Fraction
    hi: Fraction
    active: tuple[int, ...]
    prev: dict[int, int]
    eps_at: dict[int, Fraction]
    val: dict[int, Fraction]
    val_lo: dict[int, Fraction]
    val_hi: dict[int, Fraction]
    score: Matrix
    weight: Matrix
    weight_bound: Matrix
    direction: tuple[int, int] | None = None  # (target, negative) token ids
    farm: list[tuple[str, ...]] = field(default_factory=list)  # `# farm` lines, as words

    def render(self) -> str:
        """The file text: farm lines first, then NFP's lines in a fixed order."""
        out = [FARM + " ".join(words) for words in self.farm]
        out += [f"seq {self.seq}", f"kind {KIND}"]
        if self.direction is not None:
            out += [f"direction-target {self.direction[0]}",
                    f"direction-negative {self.direction[1]}"]
        out += [f"eps {rat(self.eps)}", f"margin {rat(self.margin)}",
                f"lo {rat(self.lo)}", f"hi {rat(self.hi)}"]
        out += [f"active {q}" for q in self.active]
        out += [f"prev {q} {self.prev[q]}" for q in range(self.seq)]
        out += [f"eps-at {q} {rat(self.eps_at[q])}" for q in range(self.seq)]
        for name, vector in (("val", self.val), ("val-lo", self.val_lo),
                             ("val-hi", self.val_hi)):
            out += [f"{name} {k} {rat(vector[k])}" for k in range(self.seq)]
        for name, matrix in (("score", self.score), ("weight", self.weight),
                             ("weight-bound", self.weight_bound)):
            out += [f"{name} {q} {k} {rat(matrix[q, k])}" for q in range(self.seq)
                    for k in range(self.seq)]
        return "\n".join(out) + "\n"


def rat(value: Fraction) -> str:
    """NFP's spelling of a rational: `a` or `a/b`."""
    return str(value.numerator) if value.denominator == 1 else \
        f"{value.numerator}/{value.denominator}"


# --------------------------------------------------------------------------- reading


def parse_rational(word: str, where: str) -> Fraction:
    """NFP's rational: an integer `a` or `a/b` (b a non-zero natural); nothing else."""
    top, slash, bottom = word.partition("/")
    if not _is_integer(top) or (slash and (not bottom.isdigit() or not bottom.isascii()
                                           or int(bottom) == 0)):
        raise FarmError(f"{where}: {word!r} is not a rational a or a/b (no decimals)")
    return Fraction(int(top), int(bottom) if slash else 1)


def _is_integer(word: str) -> bool:
    digits = word[1:] if word.startswith("-") else word
    return digits.isascii() and digits.isdigit()


def _natural(word: str, where: str) -> int:
    if not (word.isascii() and word.isdigit()):
        raise FarmError(f"{where}: {word!r} is not a natural number")
    return int(word)


_SCALARS = ("eps", "margin", "lo", "hi")
_VECTORS = {"eps-at": "eps_at", "val": "val", "val-lo": "val_lo", "val-hi": "val_hi"}
_MATRICES = {"score": "score", "weight": "weight", "weight-bound": "weight_bound"}


def parse(text: str, where: str = "certificate") -> NfpCertificate:
    """Read a certificate as NFP's lexer and parser would, or say which line is wrong."""
    fields: dict[str, object] = {"farm": []}
    entries: dict[str, dict] = {name: {} for name in (*_VECTORS, *_MATRICES, "prev")}
    active: list[int] = []
    seq = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        at = f"{where} line {number}"
        if line.startswith(FARM):
            fields["farm"].append(tuple(line[len(FARM):].split()))  # type: ignore[union-attr]
            continue
        if not line or line.startswith("#"):
            continue
        name, *words = line.split()
        if name in ("seq", "kind", "direction-target", "direction-negative", *_SCALARS):
            if name in fields or len(words) != 1:
                raise FarmError(f"{at}: {name} must appear once, with one value")
            fields[name] = words[0]
            if name == "seq":
                seq = _natural(words[0], at)
                if seq == 0:
                    raise FarmError(f"{at}: seq must be positive")
            continue
        if seq is None:
            raise FarmError(f"{at}: {name} before seq")
        arity = {"active": 1, "prev": 2, **dict.fromkeys(_VECTORS, 2),
                 **dict.fromkeys(_MATRICES, 3)}.get(name)
        if arity is None or len(words) != arity:
            raise FarmError(f"{at}: unknown line or wrong number of values: {line!r}")
        index_words = words[:2] if name in _MATRICES or name == "prev" else words[:1]
        indices = tuple(_natural(w, at) for w in index_words)
        if any(i >= seq for i in indices):
            raise FarmError(f"{at}: index out of range for seq {seq}: {line!r}")
        if name == "active":
            if indices[0] in active:
                raise FarmError(f"{at}: active {indices[0]} twice")
            active.append(indices[0])
            continue
        key = indices if name in _MATRICES else indices[0]
        if key in entries[name]:
            raise FarmError(f"{at}: {name} {' '.join(index_words)} twice")
        entries[name][key] = (indices[1] if name == "prev"
                              else parse_rational(words[-1], at))
    if seq is None or fields.get("kind") != KIND:
        raise FarmError(f"{where}: needs seq and kind {KIND}")
    if ("direction-target" in fields) != ("direction-negative" in fields):
        raise FarmError(f"{where}: direction-target and direction-negative come together")
    for name in _SCALARS:
        if name not in fields:
            raise FarmError(f"{where}: missing {name}")
    for name, found in entries.items():
        expected = seq * seq if name in _MATRICES else seq
        if len(found) != expected:
            raise FarmError(f"{where}: {name} has {len(found)} of its {expected} entries")
    direction = None
    if "direction-target" in fields:
        direction = (_natural(str(fields["direction-target"]), where),
                     _natural(str(fields["direction-negative"]), where))
    return NfpCertificate(
        seq, *(parse_rational(str(fields[n]), f"{where} {n}") for n in _SCALARS),
        active=tuple(sorted(active)) if active else tuple(range(1, seq)),
        prev=entries["prev"], **{attr: entries[n] for n, attr in _VECTORS.items()},
        **{attr: entries[n] for n, attr in _MATRICES.items()}, direction=direction,
        farm=fields["farm"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- NFP's rules


@dataclass(frozen=True)
class Gates:
    """`nfp induction verify`'s gates (its defaults when left out)."""

    min_margin: Fraction = Fraction(0)
    max_eps: Fraction = Fraction(1, 2)
    min_active: int | None = None  # None: max(1, seq // 8)
    min_logit_diff: Fraction | None = None


def logit_diff_bound(cert: NfpCertificate) -> Fraction:
    """NFP's lower bound: min over active q of val[prev q] − eps-at[q]·(hi − lo)."""
    return min(cert.val[cert.prev[q]] - cert.eps_at[q] * (cert.hi - cert.lo)
               for q in cert.active)


def rejections(cert: NfpCertificate, gates: Gates = Gates()) -> list[str]:
    """Why NFP's checker would reject `cert` (empty: it accepts), one reason a line."""
    why: list[str] = []
    for q in cert.active:
        p, row = cert.prev[q], [cert.weight[q, k] for k in range(cert.seq)]
        if min(row) < 0 or sum(row) != 1:
            why.append(f"query {q}: weights are not a distribution")
        for k in range(cert.seq):
            if k != p and (row[k] > cert.eps or row[k] > cert.eps_at[q]):
                why.append(f"query {q} key {k}: weight above eps")
            if k != p and cert.score[q, k] + cert.margin > cert.score[q, p]:
                why.append(f"query {q} key {k}: score within margin of prev's")
            if row[k] > cert.weight_bound[q, k]:
                why.append(f"query {q} key {k}: weight above its bound")
        if row[p] + cert.eps < 1 or row[p] + cert.eps_at[q] < 1:
            why.append(f"query {q}: prev weight + eps below 1")
    for k in range(cert.seq):
        if not cert.lo <= cert.val_lo[k] <= cert.val[k] <= cert.val_hi[k] <= cert.hi:
            why.append(f"key {k}: value outside lo ≤ val-lo ≤ val ≤ val-hi ≤ hi")
    if cert.margin < gates.min_margin:
        why.append(f"margin {cert.margin} below min-margin {gates.min_margin}")
    if cert.eps > gates.max_eps:
        why.append(f"eps {cert.eps} above max-eps {gates.max_eps}")
    min_active = gates.min_active if gates.min_active is not None else max(1, cert.seq // 8)
    if len(cert.active) < min_active:
        why.append(f"{len(cert.active)} active queries, min-active {min_active}")
    bound = logit_diff_bound(cert)
    if gates.min_logit_diff is not None and bound < gates.min_logit_diff:
        why.append(f"logit-diff bound {bound} below min-logit-diff {gates.min_logit_diff}")
    if cert.direction is not None and bound < 0:
        why.append(f"logit-diff bound {bound} is negative for the stated direction")
    return why


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Batch:
    """A batch file: the gates every item must pass, and the items' paths."""

    items: Sequence[str]
    gates: Mapping[str, Fraction | int]  # min-active, min-logit-diff, …, min-avg-logit-diff

    def render(self) -> str:
        lines = [f"{name} {value if isinstance(value, int) else rat(value)}"
                 for name, value in self.gates.items()]
        return "\n".join([*lines, *(f"item {path}" for path in self.items)]) + "\n"
