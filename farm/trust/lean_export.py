"""Export a certificate to Lean 4: a module of exact constants plus the theorems that check them.

The generated module `lean/FarmCert/Generated/<Name>.lean` holds the model's
weights as exact rationals (`Fraction(float(w))` of each stored float32, never a
decimal print), every certified row, the property results and both fingerprints,
and states theorems that the `FarmCert` library proves by evaluation: the rows
are the canonical domain, the margins are positive, the counts are consistent,
and an exact replay of the forward pass reproduces every certified margin. Lean
re-derives what it can; the generator only transcribes, and refuses input it
cannot transcribe faithfully.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from farm.errors import FarmError
from farm.model.gpt import GPTConfig, VerifiableGPT, require_mlp_blocks

LEAN_PACKAGE = Path(__file__).resolve().parents[2] / "lean"
NO_TOOLCHAIN = "no Lean toolchain (lake not on PATH)"

# Ids as `FarmCert/Cert.lean` numbers them; the Lean side defines the tasks themselves.
TASK_IDS = {"quote_close": 0, "bracket_type": 1}
PROPERTY_IDS = {"functional_equivalence": 0, "edge_necessity": 1, "content_invariance": 2,
                "robustness": 3}
STATUSES = ("verified", "falsified", "unknown")
COUNT_KEYS = ("verified", "falsified", "unknown")

_MODULE_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_RATIONAL = re.compile(r"-?[0-9]+(/[0-9]+)?")


@dataclass(frozen=True)
class LeanExport:
    """Everything one generated module states. Row, property and circuit entries are the
    certificate's own dicts (see `render_module` for the keys read)."""

    name: str
    config: GPTConfig
    weights: Mapping[str, np.ndarray]
    rows: Sequence[Mapping[str, Any]]
    checkpoint_sha256: str
    certificate_fingerprint: str
    properties: Sequence[Mapping[str, Any]]
    circuits: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


# --------------------------------------------------------------------------- literals


def lean_rational(value: Fraction) -> str:
    """`⟨num, den⟩` for a `FarmCert.Q` (a `Fraction` is already in lowest terms)."""
    return f"⟨{value.numerator}, {value.denominator}⟩"


def _vector(values: Iterable[Fraction]) -> str:
    return "[" + ", ".join(lean_rational(v) for v in values) + "]"


def _tensor(array: np.ndarray) -> str:
    """Each float32 at its exact binary value; a matrix one row per line."""
    if array.ndim == 1:
        return _vector(Fraction(float(w)) for w in array)
    rows = (_vector(Fraction(float(w)) for w in row) for row in array)
    return "[\n    " + ",\n    ".join(rows) + "]"


def _ident(key: str) -> str:
    return key.replace(".", "_")


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise FarmError(f"{where} must be a non-negative integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- validation


def _check_weights(config: GPTConfig, weights: Mapping[str, np.ndarray]) -> list[str]:
    """The tensor names in `state_dict` order, once each is known to be exact float32 data."""
    expected = {k: tuple(v.shape) for k, v in VerifiableGPT(config).state_dict().items()}
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise FarmError(f"weights do not match the config: missing {missing or 'none'}, "
                        f"unexpected {extra or 'none'}")
    for key, shape in expected.items():
        array = weights[key]
        if not isinstance(array, np.ndarray) or array.dtype != np.float32:
            raise FarmError(f"weight {key!r} must be a numpy float32 array (its exact stored "
                            f"values), got {getattr(array, 'dtype', type(array).__name__)}")
        if array.shape != shape:
            raise FarmError(f"weight {key!r} has shape {array.shape}; the config needs {shape}")
        if not np.isfinite(array).all():
            raise FarmError(f"weight {key!r} holds a non-finite value; it has no exact rational")
    return list(expected)


def _parse_margin(text: Any, where: str) -> Fraction:
    if not isinstance(text, str) or not _RATIONAL.fullmatch(text):
        raise FarmError(f"{where}: margin must be a rational string 'n/d', got {text!r}")
    num, _, den = text.partition("/")
    if den and int(den) == 0:
        raise FarmError(f"{where}: margin {text!r} has a zero denominator")
    value = Fraction(int(num), int(den or 1))
    if den and value.denominator != int(den):
        raise FarmError(f"{where}: margin {text!r} is not in lowest terms")
    return value


def _row_literal(i: int, row: Mapping[str, Any]) -> str:
    where = f"row {i}"
    if not isinstance(row, Mapping):
        raise FarmError(f"{where} must be an object")
    for key in ("index", "task", "prompt", "target", "alternate", "margin"):
        if key not in row:
            raise FarmError(f"{where} has no {key!r}")
    if row["task"] not in TASK_IDS:
        raise FarmError(f"{where}: unknown task {row['task']!r}; the Lean checker knows "
                        f"{', '.join(TASK_IDS)}")
    if not isinstance(row["prompt"], list | tuple) or not row["prompt"]:
        raise FarmError(f"{where}: prompt must be a non-empty list of token ids")
    prompt = ", ".join(str(_int(t, f"{where} prompt token")) for t in row["prompt"])
    return (f"⟨{_int(row['index'], f'{where} index')}, {TASK_IDS[row['task']]}, [{prompt}], "
            f"{_int(row['target'], f'{where} target')}, "
            f"{_int(row['alternate'], f'{where} alternate')}, "
            f"{lean_rational(_parse_margin(row['margin'], where))}⟩")


def _property_literal(i: int, result: Mapping[str, Any]) -> str:
    where = f"property result {i}"
    if not isinstance(result, Mapping):
        raise FarmError(f"{where} must be an object")
    prop, task = result.get("property"), result.get("task")
    if prop not in PROPERTY_IDS:
        raise FarmError(f"{where}: unknown property {prop!r}; expected one of "
                        f"{', '.join(PROPERTY_IDS)}")
    if task not in TASK_IDS:
        raise FarmError(f"{where}: unknown task {task!r}")
    status = result.get("status")
    if not isinstance(status, str) or status.lower() not in STATUSES:
        raise FarmError(f"{where}: status must be one of {', '.join(STATUSES)}, got {status!r}")
    counts = result.get("counts")
    if not isinstance(counts, Mapping) or set(counts) != set(COUNT_KEYS):
        raise FarmError(f"{where}: counts must have exactly the keys {', '.join(COUNT_KEYS)}, "
                        f"got {counts!r}")
    numbers = ", ".join(str(_int(counts[k], f"{where} count {k!r}")) for k in COUNT_KEYS)
    return f"⟨{PROPERTY_IDS[prop]}, {TASK_IDS[task]}, .{status.lower()}, {numbers}⟩"


def _circuit_literal(i: int, circuit: Mapping[str, Any]) -> str:
    """Node names become their positions in the circuit's own (topological) node list."""
    where = f"circuit {i}"
    if not isinstance(circuit, Mapping) or circuit.get("task") not in TASK_IDS:
        raise FarmError(f"{where} needs a known 'task', got {circuit!r:.80}")
    nodes, edges = circuit.get("nodes"), circuit.get("edges")
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes) \
            or len(set(nodes)) != len(nodes):
        raise FarmError(f"{where}: 'nodes' must be a list of distinct node names")
    if not isinstance(edges, list):
        raise FarmError(f"{where}: 'edges' must be a list of {{source, target}} objects")
    position = {n: k for k, n in enumerate(nodes)}
    pairs = []
    for edge in edges:
        if not isinstance(edge, Mapping) or edge.get("source") not in position \
                or edge.get("target") not in position:
            raise FarmError(f"{where}: edge {edge!r} does not join two listed nodes")
        pairs.append((position[edge["source"]], position[edge["target"]]))
    if "num_edges" in circuit and circuit["num_edges"] != len(edges):
        raise FarmError(f"{where}: num_edges is {circuit['num_edges']!r} but "
                        f"{len(edges)} edges are listed")
    listed = ", ".join(f"({s}, {t})" for s, t in sorted(pairs))
    return f"⟨{TASK_IDS[circuit['task']]}, {len(nodes)}, [{listed}]⟩"


def _fingerprint(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise FarmError(f"{what} must be a SHA-256 as 64 lowercase hex digits, got {value!r}")
    return value


# --------------------------------------------------------------------------- rendering


def _model_literal(cfg: GPTConfig, weights: Mapping[str, np.ndarray]) -> str:
    def norm(prefix: str) -> str:
        if cfg.norm_variant == "none":
            return "⟨[], []⟩"
        return f"⟨{_ident(prefix)}_norm_weight, {_ident(prefix)}_norm_bias⟩"

    def linear(prefix: str) -> str:
        bias = f"some {_ident(prefix)}_bias" if f"{prefix}.bias" in weights else "none"
        return f"⟨{_ident(prefix)}_weight, {bias}⟩"

    blocks = []
    for layer in range(cfg.n_layers):
        b = f"blocks.{layer}"
        fields = [f"normAttn := {norm(f'{b}.norm_attn')}"]
        fields += [f"{p} := {linear(f'{b}.attn.{p}')}" for p in "qkvo"]
        fields += [f"normMlp := {norm(f'{b}.norm_mlp')}",
                   f"up := {linear(f'{b}.mlp.up')}", f"down := {linear(f'{b}.mlp.down')}"]
        blocks.append("{ " + ",\n      ".join(fields) + " }")
    return ("def model : Model where\n  cfg := cfg\n  wte := wte_weight\n  wpe := wpe_weight\n"
            "  blocks := [\n    " + ",\n    ".join(blocks) + "]\n"
            f"  normFinal := {norm('norm_final')}\n  lmHead := {linear('lm_head')}\n")


def render_module(export: LeanExport) -> str:
    """The Lean source of the certificate module; raises FarmError on input it cannot state.

    Rows: `index`, `task` (name), `prompt` (token ids), `target`, `alternate`, `margin`
    ("n/d" in lowest terms). Properties: `property` (name), `task`, `status`
    (verified/falsified/unknown), `counts` {verified, falsified, unknown}. Circuits
    (optional): the `circuit.json` layout, `task`, `nodes`, `edges`, `num_edges`.
    """
    cfg = export.config
    if not _MODULE_NAME.fullmatch(export.name):
        raise FarmError(f"module name {export.name!r} must be a Lean identifier in UpperCamelCase "
                        f"(letters and digits)")
    if not cfg.is_piecewise_linear:
        raise FarmError("the Lean replay covers the piecewise-linear family only (BandNorm or "
                        f"no norm, sparsemax, LeakyReLU); this config has {cfg.norm_variant}, "
                        f"{cfg.attn_variant}, {cfg.activation}")
    require_mlp_blocks(cfg, "the Lean replay")
    keys = _check_weights(cfg, export.weights)
    checkpoint = _fingerprint(export.checkpoint_sha256, "checkpoint SHA-256")
    fingerprint = _fingerprint(export.certificate_fingerprint, "certificate fingerprint")
    rows = [_row_literal(i, r) for i, r in enumerate(export.rows)]
    # The tasks in row order; Lean checks the rows are exactly their domains, in that order.
    task_ids = list(dict.fromkeys(TASK_IDS[r["task"]] for r in export.rows))
    properties = [_property_literal(i, p) for i, p in enumerate(export.properties)]
    circuits = [_circuit_literal(i, c) for i, c in enumerate(export.circuits)]
    if not rows:
        raise FarmError("a certificate module needs at least one row")

    tensors = "\n\n".join(
        f"def {_ident(k)} : {'Vec' if export.weights[k].ndim == 1 else 'Mat'} :=\n  "
        f"{_tensor(export.weights[k])}" for k in keys)
    ns = f"FarmCert.Generated.{export.name}"
    return f"""/-
Certificate module {export.name}: generated by `farm.trust.lean_export`; do not edit.

Weights are the checkpoint's float32 values taken exactly (`Fraction(float(w))`);
every row, property result and both fingerprints are transcribed from the
certificate. The theorems at the end are what `lake build` checks.
-/
import FarmCert

-- Generated data is large; the time it takes is bounded by the data itself.
set_option maxHeartbeats 0
set_option maxRecDepth 100000

namespace {ns}

open FarmCert

def checkpointSha256 : String := "{checkpoint}"
def certificateFingerprint : String := "{fingerprint}"

def cfg : Config where
  vocabSize := {cfg.vocab_size}
  seqLen := {cfg.seq_len}
  dModel := {cfg.d_model}
  nLayers := {cfg.n_layers}
  nHeads := {cfg.n_heads}
  dMlp := {cfg.d_mlp}
  bandNorm := {'true' if cfg.norm_variant == 'signed_l1_band_norm' else 'false'}
  lmHeadBias := {'true' if cfg.lm_head_bias else 'false'}
  attnScale := {lean_rational(Fraction(cfg.attn_scale))}

/-! ## Weights: one definition per `state_dict` tensor, matrices `[out][in]` -/

{tensors}

{_model_literal(cfg, export.weights)}
/-! ## Certificate contents -/

/-- The certified tasks, in row order: 0 `quote_close`, 1 `bracket_type`. -/
def certifiedTasks : List Nat := [{', '.join(map(str, task_ids))}]

/-- Rows: `⟨index, task id, prompt, target, alternate, margin⟩`. -/
def rows : List Row := [
  {(','+chr(10)+'  ').join(rows)}]

/-- Property results: `⟨property id, task id, status, verified, falsified, unknown⟩`. -/
def properties : List PropertyResult := [{(','+chr(10)+'  ').join(properties)}]

/-- Circuits: `⟨task id, node count, edges (source, target)⟩`. -/
def circuits : List CircuitSummary := [{(','+chr(10)+'  ').join(circuits)}]

/-! ## Theorems

Those proved `by decide +kernel` are evaluated by the kernel itself (it reduces the
checker to `true`, skipping the slower elaborator-side evaluation). -/

/-- Every tensor has the shape the config implies, every literal a positive denominator, and
the attention scale is `√headDim` exactly (perfect squares) or within float32 rounding. -/
theorem model_wf : model.wellFormed = true := by decide +kernel

/-- The rows are the certified tasks' domain in canonical order (count, task, prompt), with
target = P(x) and alternate = the other candidate of the task. -/
theorem rows_ok : checkRows certifiedTasks rows = true := by decide +kernel

theorem inputs_ok : inputsAccepted model rows = true := by decide +kernel

/-- Every certified margin is strictly positive. -/
theorem margins_positive : marginsPositive rows = true := by decide +kernel

theorem circuits_ok : checkCircuits circuits = true := by decide +kernel

/-- Every property result is for a certified task, consistent with its counts, and stated
once per (property, task). -/
theorem properties_ok : checkProperties certifiedTasks circuits properties = true := by
  decide +kernel

/-- The exact forward replay of every row reproduces its certified margin.
This one uses `native_decide` (compiled evaluation, trusting the Lean compiler):
{len(rows)} exact-rational forward passes are far too slow for the kernel. -/
theorem replay_ok : replayMatches model rows = true := by native_decide

theorem margins_replayed : ∀ r ∈ rows, replayMargin model r = r.margin :=
  replayMatches_sound replay_ok

/-- The model itself ranks the target strictly above the alternate on every row. -/
theorem decisions_correct : ∀ r ∈ rows, (replayMargin model r).isPos = true :=
  decisions_of_checks replay_ok margins_positive

end {ns}
"""


def write_module(export: LeanExport, package_dir: str | os.PathLike[str] = LEAN_PACKAGE) -> Path:
    """Render, then atomically write `<package>/FarmCert/Generated/<Name>.lean`; returns it."""
    text = render_module(export)  # everything is validated before any file is touched
    folder = Path(package_dir) / "FarmCert" / "Generated"
    target = folder / f"{export.name}.lean"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{export.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise FarmError(f"cannot write Lean module {target}: {err.strerror or err}") from err
    return target


# --------------------------------------------------------------------------- lake


@dataclass(frozen=True)
class LakeOutcome:
    """What `lake build` said: "ok", "failed" (with its log), or "not run" (and why)."""

    status: Literal["ok", "failed", "not run"]
    log: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def lake_path() -> str | None:
    """Where `lake` is, or None when no Lean toolchain is installed."""
    return shutil.which("lake")


def run_lake_build(package_dir: str | os.PathLike[str] = LEAN_PACKAGE,
                   timeout_s: float = 3600.0) -> LakeOutcome:
    """Run `lake build` on a copy of the package (so concurrent writers and a stale `.lake`
    cannot affect the result, and the tree stays clean)."""
    lake = lake_path()
    if lake is None:
        return LakeOutcome("not run", NO_TOOLCHAIN)
    with tempfile.TemporaryDirectory(prefix="farmcert-") as tmp:
        copy = Path(tmp) / "lean"
        shutil.copytree(package_dir, copy, ignore=shutil.ignore_patterns(".lake", ".*.tmp"))
        try:
            proc = subprocess.run([lake, "build"], cwd=copy, capture_output=True, text=True,
                                  timeout=timeout_s)
        except OSError as err:  # found on PATH but cannot be started: it did not run
            return LakeOutcome("not run", f"cannot run {lake}: {err.strerror or err}")
        except subprocess.TimeoutExpired as err:
            out = err.stdout or ""
            partial = out.decode(errors="replace") if isinstance(out, bytes) else out
            return LakeOutcome("failed", f"lake build timed out after {timeout_s:g} s\n{partial}")
    log = proc.stdout + proc.stderr
    return LakeOutcome("ok" if proc.returncode == 0 else "failed", log)
