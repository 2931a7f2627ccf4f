"""Query planning for the four circuit properties of SPEC §4.

Planning turns (model, circuit, task) into plain, picklable `PlannedQuery`
records: the SMT-LIB2 text, its sha256 (the query's identity in caches and
certificates), the variables to read back on SAT, and what an exact replay of a
SAT model must check. Solving is only `SolverPool.solve(text, model_vars)`, and
judging a verdict (`farm.verify.local.judge`) needs nothing but the record and the
exact model, so a local pool and a Ray reducer run the same three steps.

Every query asserts the *negation* of its claim (and, in guided mode, that some
guard fails), so UNSAT proves the claim and SAT yields a model to replay. All
decisions are read from the sign of one margin per run, logit[c0] − logit[c1]
with (c0, c1) the task's candidates in token order; a tie (sign 0) is never a
correct decision. A `Claim` is one predicate on those signs: its SMT negation is
the disjunction of the sign patterns it rejects and its exact check evaluates
the same predicate, so the two can never drift apart.

Queries over domain inputs have constant inputs, so the exact evaluator knows
each claim's truth when planning; a verdict that contradicts it is an encoder
bug (ERROR), never a result. Robustness perturbs the final residual by a free η
and is judged by replaying η in exact arithmetic.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Literal

from encoders.circuit import EncodedRun, encode_run
from encoders.lazy import Lazy
from encoders.ops import Settled, band_norm_full, band_norm_guided
from encoders.smtlib import Affine, Formula, Query, and_, eq, ge, gt, le, lt, not_, or_
from farm.errors import FarmError
from farm.model.circuit import Circuit, Edge
from farm.model.exact import BandNormBranch, ExactModel, RowResult
from farm.model.gpt import GPTConfig
from farm.model.tracing import Trace, TraceReader
from farm.tasks.registry import Task

FUNCTIONAL_EQUIVALENCE = "functional_equivalence"
EDGE_NECESSITY = "edge_necessity"
CONTENT_INVARIANCE = "content_invariance"
ROBUSTNESS = "robustness"
RADIUS = "robustness_radius"  # bisection steps: reported with robustness, never judged as it
PROPERTIES = {"fe": FUNCTIONAL_EQUIVALENCE, "en": EDGE_NECESSITY, "ci": CONTENT_INVARIANCE,
              "rob": ROBUSTNESS}
EncodeMode = Literal["guided", "full"]
WITNESS_CHUNK = 16  # prompts per exact run while searching an edge's witness
NO_WITNESS = ("no input of the domain changes the decision when this edge is removed (exact "
              "evaluation)")  # edge necessity's finding, as reported and as checked


def sign(x: Fraction) -> int:
    return (x > 0) - (x < 0)


@dataclass(frozen=True)
class Claim:
    """What a query proves, as a predicate on the signs of its margins.

    decides: the one run decides `sign` (P(x), or the unperturbed decision);
    differ:  two runs decide differently (a tie differs from a decision);
    agree:   two runs make the same decision, and neither ties.
    """

    kind: Literal["decides", "differ", "agree"]
    sign: int = 0

    @property
    def arity(self) -> int:
        return 1 if self.kind == "decides" else 2

    def on_signs(self, s: tuple[int, ...]) -> bool:
        if self.kind == "decides":
            return s[0] == self.sign
        if self.kind == "differ":
            return s[0] != s[1]
        return s[0] == s[1] != 0

    def holds(self, margins: Sequence[Fraction]) -> bool:
        return self.on_signs(tuple(sign(m) for m in margins))

    def violated(self, margins: Sequence[Affine]) -> Formula:
        """The SMT negation: some sign pattern the claim rejects."""
        rejected = [s for s in itertools.product((-1, 0, 1), repeat=self.arity)
                    if not self.on_signs(s)]
        return or_(*(and_(*(_sign_is(m, si) for m, si in zip(margins, s, strict=True)))
                     for s in rejected))


def _sign_is(m: Affine, s: int) -> Formula:
    return gt(m, 0) if s > 0 else lt(m, 0) if s < 0 else eq(m, 0)


@dataclass(frozen=True)
class Fixed:
    """Constant inputs: the exact margins, known when planned, that any SAT model must show."""

    margins: tuple[Fraction, ...]


@dataclass(frozen=True)
class Perturbed:
    """The final residual plus a free η with ‖η‖∞ ≤ epsilon: a SAT η is replayed exactly.

    The query's η ranges over the ball of radius `ball` around `centre`, which
    holds the ε-ball around `residual` (`short_centre`): a SAT point outside the
    ε-ball proves nothing either way, and the input is asked again around the
    residual itself. `branch` is set when the final norm was encoded on the
    branch it takes at r_E(x) (guided): a SAT η that leaves that branch without
    changing the decision proves nothing either, and the input is asked again
    fully encoded.
    """

    index: int  # the input, in the task's domain order
    residual: tuple[Fraction, ...]  # r_E(x)
    epsilon: Fraction
    eta_vars: tuple[str, ...]  # offsets from `centre`
    branch: BandNormBranch | None
    centre: tuple[Fraction, ...]
    ball: Fraction


@dataclass(frozen=True)
class PlannedQuery:
    """One SMT query and everything needed to judge its verdict, with no live objects."""

    property: str
    task: str
    subject: str  # human-readable: input, pair, edge+witness, input+radius
    text: str
    hash: str  # sha256 of text: the query's identity
    model_vars: tuple[str, ...]
    margin_vars: tuple[str, ...]  # per run, logit[c0] − logit[c1]
    claim: Claim
    prompts: tuple[tuple[int, ...], ...]  # the inputs, per run
    replay: Fixed | Perturbed
    edge: Edge | None = None  # edge necessity: the removed edge

    @property
    def kind(self) -> str:
        """Queries of one kind behave alike for the solvers (a race learns per kind)."""
        if isinstance(self.replay, Perturbed):
            return f"{self.property}/{'guided' if self.replay.branch else 'full'}"
        return self.property

    @property
    def holds_exactly(self) -> bool | None:
        """The claim's exact truth, when the inputs are constant."""
        return self.claim.holds(self.replay.margins) if isinstance(self.replay, Fixed) else None


@dataclass(frozen=True)
class Finding:
    """A verdict settled by exhaustive exact evaluation, with nothing to ask a solver."""

    property: str
    task: str
    subject: str
    detail: str


def _negated_guards(guards: Sequence[Formula]) -> list[Formula]:
    return [not_(and_(*guards))] if guards else []


class Planner:
    """Plans the queries of one (model, circuit, task); the circuit's exact runs are shared."""

    def __init__(self, model: ExactModel, circuit: Circuit, task: Task,
                 mode: EncodeMode = "guided", inputs: Sequence[int] | None = None,
                 traces: TraceReader | None = None,
                 likely_flips: Callable[[Circuit], Sequence[int]] | None = None) -> None:
        """`inputs` restricts the domain to those indices (benchmarks, tests): every
        property then speaks of that subset only, as `Planner.restricted` says.

        `traces` (a `farm.model.tracing` file of this circuit, refused otherwise) gives
        the guided branches of the circuit's own runs in place of the exact runs'
        traces, so the recorded file is what gets proved from; a wrong record
        fails its guard, it never proves a claim.

        `likely_flips(ablated)` (e.g. `farm.model.controlled.FlipScreen`) names the
        inputs to try first when searching an edge's witness; the search stays
        exact and exhaustive, so a wrong guess costs time, never a verdict.
        """
        self.model, self.circuit, self.task, self.mode = model, circuit, task, mode
        domain = task.domain()
        self.restricted = inputs is not None
        self.prompts = [domain[i] for i in inputs] if inputs is not None else domain
        self.runs = model.runs(circuit)
        # each prompt's exact run, when first asked for: solving the first queries
        # overlaps evaluating the later prompts
        self.results: Sequence[RowResult] = Lazy(len(self.prompts),
                                                 lambda i: self.runs.row(self.prompts[i]))
        if len(task.candidates) != 2:
            raise FarmError(f"task {task.name} has {len(task.candidates)} candidates; the SMT "
                            "encodings decide two-candidate tasks")
        self.c0, self.c1 = task.candidates
        self.branches: dict[tuple[int, ...], Trace] = (  # empty: the exact runs' own traces
            traces.traces_of(circuit, self.prompts) if traces is not None else {})
        self._decisions: dict[tuple[int, int], PlannedQuery] = {}  # see `_decides`
        if likely_flips is not None and inputs is not None:
            raise ValueError("likely_flips names inputs of the whole domain; a planner "
                             "restricted to some inputs cannot take it")
        self.likely_flips = likely_flips

    def margin(self, result: RowResult) -> Fraction:
        return result.logits[self.c0] - result.logits[self.c1]

    def reference_sign(self, prompt: tuple[int, ...]) -> int:
        """The sign of logit[c0] − logit[c1] that the reference program P asks for."""
        return 1 if self.task.target(prompt) == self.c0 else -1

    def _decision_query(self, prop: str, subject: str, claim: Claim,
                        runs: Sequence[tuple[Circuit, tuple[int, ...], RowResult]],
                        edge: Edge | None = None) -> PlannedQuery:
        q = Query()
        guards: list[Formula] = []
        margins = []
        first_run: dict[tuple[int, ...], EncodedRun] = {}  # by prompt: a later run's base
        for k, (circuit, prompt, result) in enumerate(runs):
            branches = self.branches.get(prompt) if circuit == self.circuit else None
            run = encode_run(q, self.model, circuit, prompt, tag=f"r{k}", mode=self.mode,
                             result=result, branches=branches, base=first_run.get(prompt))
            first_run.setdefault(prompt, run)
            guards.extend(run.guards)
            margins.append(q.define(f"m{k}", run.logits[self.c0] - run.logits[self.c1],
                                    model=True))
        q.add(or_(*_negated_guards(guards), claim.violated(margins)))
        return _finish(q, prop, self.task.name, subject, claim,
                       tuple(p for _, p, _ in runs),
                       Fixed(tuple(self.margin(r) for _, _, r in runs)), edge)

    def _subject(self, i: int) -> str:
        return f"input {i} {list(self.prompts[i])}"

    # ----------------------------------------------------------------- the four properties

    def functional_equivalence(self) -> Iterator[PlannedQuery]:
        """Per input x: d(C_E, x) = P(x)."""
        for i, prompt in enumerate(self.prompts):
            yield self._decides(i, self.reference_sign(prompt), FUNCTIONAL_EQUIVALENCE,
                                self._subject(i))

    def _decides(self, i: int, decision: int, prop: str, subject: str) -> PlannedQuery:
        """The circuit decides `decision` on input i; planned once per (input, decision),
        since functional equivalence and content invariance ask it word for word."""
        if (hit := self._decisions.get((i, decision))) is None:
            hit = self._decisions[i, decision] = self._decision_query(
                prop, subject, Claim("decides", decision),
                [(self.circuit, self.prompts[i], self.results[i])])
        return replace(hit, property=prop, subject=subject)

    def edge_necessity(self) -> tuple[list[PlannedQuery], list[Finding]]:
        """Per retained edge e: a witness x found exactly, then proved d(C_E∖e, x) ≠ d(C_E, x).

        An edge no input distinguishes fails the property: the exact search is
        exhaustive over the domain, so that is a finding, not a query.
        """
        queries, findings = [], []
        for edge in self.circuit.ordered_edges():
            ablated = self.circuit.without(edge)
            witness = self.witness(ablated)
            if witness is None:
                findings.append(Finding(EDGE_NECESSITY, self.task.name,
                                        f"edge {edge[0]}->{edge[1]}", NO_WITNESS))
                continue
            queries.append(self.edge_witness_query(edge, *witness))
        return queries, findings

    def edge_witness_query(self, edge: Edge, i: int, ablated: RowResult | None = None
                           ) -> PlannedQuery:
        """d(C_E∖e, x_i) ≠ d(C_E, x_i): edge necessity's query for a witness input i
        (`ablated`, the run without the edge, is computed if not given)."""
        circuit = self.circuit.without(edge)
        if ablated is None:
            ablated = self.model.run([self.prompts[i]], circuit)[0]
        return self._decision_query(
            EDGE_NECESSITY, f"edge {edge[0]}->{edge[1]} witness {self._subject(i)}",
            Claim("differ"), [(self.circuit, self.prompts[i], self.results[i]),
                              (circuit, self.prompts[i], ablated)], edge)

    def witness(self, ablated: Circuit) -> tuple[int, RowResult] | None:
        """An input whose decision changes without the edge, in exact arithmetic: the
        likely flips first, one by one (a good guess costs one run), then the rest of
        the domain in order, in chunks that share prompt prefixes."""
        likely = list(dict.fromkeys(self.likely_flips(ablated)))[:WITNESS_CHUNK] if (
            self.likely_flips) else []
        tried = set(likely)
        rest = [i for i in range(len(self.prompts)) if i not in tried]
        chunks = [[i] for i in likely] + [rest[s:s + WITNESS_CHUNK]
                                          for s in range(0, len(rest), WITNESS_CHUNK)]
        for chunk in chunks:
            runs = self.model.run([self.prompts[i] for i in chunk], ablated)
            for i, res in zip(chunk, runs, strict=True):
                if sign(self.margin(res)) != sign(self.margin(self.results[i])):
                    return i, res
        return None

    def content_invariance(self, pairwise: bool = False) -> Iterator[PlannedQuery]:
        """d(x) = d(x') for R(x, x').

        Per opener class, every member is proved to decide as the class's anchor
        (its first member) decides exactly: equality through that one decision
        covers every pair. Wherever the anchor decides P(x), these are functional
        equivalence's queries word for word, so a farm answers them once. An
        anchor that ties has no decision to share: its class is asked pair by pair
        against it, as `pairwise` asks every pair.
        """
        classes: dict[Hashable, list[int]] = {}
        for i, prompt in enumerate(self.prompts):
            classes.setdefault(self.task.features(prompt), []).append(i)
        for members in classes.values():
            if len(members) == 1:
                continue  # a class of one has no pair to check
            anchor = members[0]
            decision = sign(self.margin(self.results[anchor]))
            if decision and not pairwise:
                yield from (self._decides(i, decision, CONTENT_INVARIANCE,
                                          f"{self._subject(i)} decides as anchor {anchor}")
                            for i in members)
                continue
            pairs = (itertools.combinations(members, 2) if pairwise
                     else ((anchor, j) for j in members[1:]))
            yield from (self.pair_query(a, b) for a, b in pairs)

    def pair_query(self, a: int, b: int) -> PlannedQuery:
        """d(x_a) = d(x_b): content invariance's query for one pair of inputs."""
        return self._decision_query(
            CONTENT_INVARIANCE, f"pair {a}~{b} {list(self.prompts[a])}~{list(self.prompts[b])}",
            Claim("agree"), [(self.circuit, self.prompts[a], self.results[a]),
                             (self.circuit, self.prompts[b], self.results[b])])

    def robustness(self, epsilon: Fraction) -> Iterator[PlannedQuery]:
        """Per input: no η with ‖η‖∞ ≤ ε moves the decision of r_E(x) + η off P(x).

        First tier, as `robustness_query` chooses: guided (the final norm on its
        branch at η = 0, one small LP) where the whole branch is fixed over the
        ball, else full. Inputs a first query leaves open are re-asked with
        `encoding="full"`.
        """
        for i in range(len(self.prompts)):
            yield self.robustness_query(i, epsilon)

    def robustness_query(self, i: int, epsilon: Fraction, prop: str = ROBUSTNESS,
                         encoding: EncodeMode | None = None) -> PlannedQuery:
        """Final norm and lm_head on r_E(x) + η, claim: the decision is P(x).

        The claim equals SPEC's "unchanged decision" wherever functional
        equivalence holds. Guided, the norm's branch conditions are guards in
        the negated claim (never assumed), so UNSAT also proves the branch stays.
        Full, a centred coordinate c_i moves by η_i − mean(η), less than 2ε, so
        its sign is fixed in advance when far enough from 0 (`settled_in_ball`).
        So are a side's projection and lift, and a projected side's support.
        `encoding` None (a first query): guided only if the whole branch is
        fixed so (`_branch_fixed`). Where it is not, a guided query is often
        answered sat by an η that leaves the branch and asked again fully (1-head
        bracket, ε = 1/100: 29 of 125), so it is skipped: the full encoding
        splits only on what is left open. A first query is centred on
        `short_centre(r_E(x))`; a query asked
        again (`encoding` given) on r_E(x) itself, so it settles either way a
        first one can be inconclusive.
        """
        cfg, d = self.model.cfg, self.model.cfg.d_model
        residual = tuple(self.results[i].final_residual)
        centre, ball = short_centre(residual, epsilon) if encoding is None else (
            residual, epsilon)
        settled = settled_in_ball(centre, ball, cfg)
        if encoding is None:
            encoding = "guided" if _branch_fixed(settled, d) else "full"
        q = Query()
        eta = [q.real(f"eta_{k}", model=True) for k in range(d)]
        for e in eta:
            q.add(le(e, ball), ge(e, -ball))
        r = [e + c for e, c in zip(eta, centre, strict=True)]
        guards: list[Formula] = []
        branch = None
        if self.model.norm_final is None:
            normed = r
        elif encoding == "guided":
            trace = self.branches.get(self.prompts[i], self.results[i].trace)
            branch = trace[-1]["logits.norm"]
            normed, guards = band_norm_guided(q, r, *self.model.norm_final, cfg.half_low,
                                              cfg.half_high, branch, tag="fn")
        else:
            normed, guards = band_norm_full(q, r, *self.model.norm_final, cfg.half_low,
                                            cfg.half_high, tag="fn", **settled)
        head = self.model.lm_head
        row = [Fraction(a - b, head.scale)
               for a, b in zip(head.weight[self.c0], head.weight[self.c1], strict=True)]
        m = q.define("m0", Affine.dot(row, normed,
                                      Fraction(head.bias[self.c0] - head.bias[self.c1],
                                               head.scale)), model=True)
        claim = Claim("decides", self.reference_sign(self.prompts[i]))
        q.add(or_(*_negated_guards(guards), claim.violated([m])))
        return _finish(q, prop, self.task.name, f"{self._subject(i)} eps {epsilon} {encoding}",
                       claim, (self.prompts[i],),
                       Perturbed(i, residual, epsilon, tuple(q.model_vars[:d]), branch, centre,
                                 ball))


CENTRE_BITS = 40  # a first robustness query is centred on r_E(x) rounded to 2^-40


def short_centre(residual: Sequence[Fraction], epsilon: Fraction
                 ) -> tuple[tuple[Fraction, ...], Fraction]:
    """A centre of few digits and a radius whose ball holds the ε-ball around `residual`.

    r_E(x) has hundreds of digits per coordinate, and a query repeats them in
    every bound and guard of the final norm (quote, 2 heads: 28 K digits of a
    33 K-character text). Rounded to a multiple of 2^-40 it moves by at most
    2^-41 per coordinate, so the ball of radius ε + 2^-41 around it holds the
    ε-ball around r_E(x): an UNSAT answer proves the claim, a stronger one."""
    unit = 1 << CENTRE_BITS
    centre = tuple(Fraction(round(r * unit), unit) for r in residual)
    if centre == tuple(residual):
        return centre, epsilon
    return centre, epsilon + Fraction(1, 2 * unit)


def settled_in_ball(residual: Sequence[Fraction], epsilon: Fraction, cfg: GPTConfig
                    ) -> dict[str, Any]:
    """What of the final norm's branch cannot change for r + η, ‖η‖∞ ≤ ε.

    A centred coordinate moves by δ_i = η_i − mean(η) = (1 − 1/d)η_i − Σ_{j≠i} η_j/d,
    at most 2ε(d − 1)/d, so its sign is fixed when |c_i| is larger. The centred
    vector sums to zero, so both sides sum to half its ℓ1 norm, which moves by
    at most ‖δ‖₁ ≤ dε (Σ|η_i − mean(η)| is convex, largest at a vertex of the
    ball, where it is dε − ε(2k − d)²/d with k coordinates at +ε): where the
    whole range is on one side of half_high (half_low), the projection (lift)
    always or never happens (bounding each coordinate alone leaves the
    projection open on most inputs at ε = 0.2). Where it always happens, a
    coordinate whose least value exceeds the threshold of the sides' greatest
    values is always kept, one whose greatest is at most the threshold of their
    least always zeroed (`_threshold`): the full encoding then splits only on the
    others (1-head bracket, ε = 1/100: cvc5 63 -> 18 ms a query, z3 426 -> 66).
    Exact arithmetic; `band_norm_full` turns each settled part into a guard the
    solver checks, so a mistake here can cost a query, never a wrong verdict.
    """
    d = len(residual)
    mean = sum(residual) / d
    centred = [c - mean for c in residual]
    reach = 2 * epsilon * (d - 1) / d
    l1 = sum(abs(c) for c in centred)
    low = max(l1 - d * epsilon, sum(max(abs(c) - reach, 0) for c in centred)) / 2
    high = (l1 + d * epsilon) / 2
    projected = False if high <= cfg.half_high else True if low > cfg.half_high else None
    lifted = (False if projected or low >= cfg.half_low else
              True if projected is False and high < cfg.half_low else None)
    sides = {}
    for name, orient in (("p", 1), ("n", -1)):
        inside = outside = frozenset()
        if projected:
            lo = [max(orient * c - reach, 0) for c in centred]
            hi = [max(orient * c + reach, 0) for c in centred]
            least, most = _threshold(lo, cfg.half_high), _threshold(hi, cfg.half_high)
            inside = frozenset(k for k, v in enumerate(lo) if v > most)
            outside = frozenset(k for k, v in enumerate(hi) if v <= least)
        sides[name] = Settled(projected, lifted, inside, outside)
    return {"fixed_signs": {k: sign(c) for k, c in enumerate(centred) if abs(c) > reach},
            "settled": sides}


def _branch_fixed(settled: Mapping[str, Any], d: int) -> bool:
    """Whether `settled_in_ball` fixed the final norm's whole branch: every sign, each
    side's projection and lift, and a projected side's support (an unprojected
    side's lift support follows from the signs)."""
    signs = settled["fixed_signs"]
    if len(signs) < d:
        return False
    for name, orient in (("p", 1), ("n", -1)):
        side = settled["settled"][name]
        if side.projected is None or side.lifted is None:
            return False
        live = {k for k, s in signs.items() if s == orient}
        if side.projected and not live <= side.inside | side.outside:
            return False
    return True


def _threshold(s: Sequence[Fraction], total: Fraction) -> Fraction:
    """The τ with Σ max(s_i − τ, 0) = total. It grows with every s_i, so over a box
    lo ≤ s ≤ hi it lies between τ(lo) and τ(hi): an s_i whose lower bound exceeds
    τ(hi) is always projected to s_i − τ > 0, one whose upper bound is at most τ(lo)
    always to 0."""
    tau, cumulative = None, Fraction(0)
    for k, v in enumerate(sorted(s, reverse=True), start=1):
        cumulative += v
        if v > (t := (cumulative - total) / k):
            tau = t
    assert tau is not None, "the largest s_i always exceeds its own threshold"
    return tau


def _finish(q: Query, prop: str, task: str, subject: str, claim: Claim,
            prompts: tuple[tuple[int, ...], ...], replay: Fixed | Perturbed,
            edge: Edge | None = None) -> PlannedQuery:
    """Render once and name the query by the sha256 of its text."""
    text = q.text()
    margins = tuple(v for v in q.model_vars if v.startswith("m") and v[1:].isdigit())
    return PlannedQuery(prop, task, subject, text, hashlib.sha256(text.encode()).hexdigest(),
                        q.model_vars, margins, claim, prompts, replay, edge)
