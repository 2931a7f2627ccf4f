"""Checkpoints: a verified model's weights, frozen and named by their SHA-256.

Every certificate names the model it speaks of, so a checkpoint is an immutable
value whose identity is the SHA-256 of its canonical safetensors bytes. On disk
a checkpoint is a directory:

    <dir>/model.safetensors   float32 tensors, names as in VerifiableGPT.state_dict()
    <dir>/config.json         {"format_version", "weights_sha256", "config", "extras"}

Saves are atomic (temp files beside the target, then os.replace), and loads
refuse anything short of exactly the tensors the config implies, all finite.
`export_smt_weights` / `import_smt_weights` convert to and from the upstream
`smt_weights.json` layout (SPEC §5) without changing a single bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
from safetensors import SafetensorError

from farm.atomic import stage_bytes, write_bytes_atomic
from farm.errors import FarmError
from farm.model.gpt import (
    ACTIVATIONS,
    ADDED_FIELDS,
    ATTN_VARIANTS,
    NORM_VARIANTS,
    GPTConfig,
    VerifiableGPT,
)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EXTRA_FIELDS = ("program_heads",)  # upstream metadata carried through unchanged


@lru_cache(maxsize=32)
def _expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict names and shapes of VerifiableGPT(config), from a throwaway CPU model:
    no larger than the weights it checks, and not on the meta device, whose init imports
    torch._dynamo (seconds, on every checkpoint load)."""
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the RNG
        model = VerifiableGPT(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _to_numpy(name: str, tensor: torch.Tensor) -> np.ndarray:
    """A float32 tensor as numpy; other dtypes are refused, never silently cast."""
    if tensor.dtype != torch.float32:
        raise FarmError(f"tensor {name!r} has dtype {tensor.dtype}; expected torch.float32")
    return tensor.detach().cpu().numpy()


def _check_extras(extras: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the carried-through upstream metadata and return an independent copy."""
    if not isinstance(extras, Mapping):
        raise FarmError(f"extras must be a mapping, got {type(extras).__name__}")
    unknown = sorted(set(extras) - set(EXTRA_FIELDS))
    if unknown:
        raise FarmError(f"unknown extras field(s): {', '.join(map(repr, unknown))}; "
                        f"expected only {', '.join(EXTRA_FIELDS)}")
    if "program_heads" in extras and not isinstance(extras["program_heads"], dict):
        raise FarmError("'program_heads' must be a JSON object, got "
                        f"{type(extras['program_heads']).__name__}")
    try:
        return json.loads(json.dumps(dict(extras), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise FarmError(f"extras are not plain JSON: {err}") from err


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A model as an immutable value: config, float32 weights, and their SHA-256 identity.

    Construction validates the weights against the config (exact names and
    shapes, float32, finite) and computes `sha256` from the canonical
    safetensors bytes, so no Checkpoint can exist with a wrong identity.
    """

    config: GPTConfig
    weights: Mapping[str, np.ndarray] = field(repr=False)
    extras: Mapping[str, Any] = field(default_factory=dict)
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.config, GPTConfig):
            raise FarmError(f"config must be a GPTConfig, got {type(self.config).__name__}")
        expected = _expected_shapes(self.config)
        missing = [name for name in expected if name not in self.weights]
        if missing:
            raise FarmError(f"missing tensor(s): {', '.join(missing)}")
        unexpected = sorted(set(self.weights) - set(expected))
        if unexpected:
            raise FarmError(f"unexpected tensor(s): {', '.join(unexpected)}")
        frozen = {}
        for name, shape in expected.items():
            array = self.weights[name]
            if not isinstance(array, np.ndarray):
                raise FarmError(f"tensor {name!r} is a {type(array).__name__}, "
                                "not a numpy array")
            if array.dtype != np.float32:
                raise FarmError(f"tensor {name!r} has dtype {array.dtype}; expected float32")
            if array.shape != shape:
                raise FarmError(f"tensor {name!r} has shape {array.shape}; expected {shape}")
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                raise FarmError(f"tensor {name!r} has {bad} non-finite value(s) (NaN/inf)")
            copy = np.array(array, order="C")
            copy.flags.writeable = False  # the sha256 must keep describing these bytes
            frozen[name] = copy
        object.__setattr__(self, "weights", MappingProxyType(frozen))
        object.__setattr__(self, "extras", MappingProxyType(_check_extras(self.extras)))
        object.__setattr__(self, "sha256", hashlib.sha256(self.weights_bytes()).hexdigest())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return (self.sha256, self.config, dict(self.extras)) == (
            other.sha256, other.config, dict(other.extras))

    def __hash__(self) -> int:
        return hash((self.sha256, self.config))

    def weights_bytes(self) -> bytes:
        """The canonical safetensors serialization; `sha256` is its digest."""
        return safetensors.numpy.save(dict(self.weights))

    @classmethod
    def from_model(cls, model: VerifiableGPT) -> Checkpoint:
        """Snapshot a float32 model's parameters (a float64 model is refused, not rounded)."""
        return cls(model.cfg, {name: _to_numpy(name, t) for name, t in model.state_dict().items()})

    def to_model(self, dtype: torch.dtype = torch.float32) -> VerifiableGPT:
        """A fresh VerifiableGPT holding these weights (strict load), cast to `dtype`."""
        if self.extras.get("program_heads"):
            raise FarmError("checkpoint has program heads "
                            f"({', '.join(sorted(self.extras['program_heads']))}), which "
                            "VerifiableGPT cannot run: its weights alone do not define the model")
        with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the RNG
            model = VerifiableGPT(self.config)
        model.load_state_dict({n: torch.tensor(a) for n, a in self.weights.items()}, strict=True)
        return model.to(dtype)

    def num_parameters(self) -> int:
        return sum(a.size for a in self.weights.values())


# --------------------------------------------------------------------------- files


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a repeated key would silently hide one of its values."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise FarmError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise FarmError(f"missing file {path}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise FarmError(f"cannot read {path}: {err}") from err
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (json.JSONDecodeError, FarmError) as err:
        raise FarmError(f"{path}: malformed JSON: {err}") from err
    if not isinstance(data, dict):
        raise FarmError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _require_fields(data: Mapping[str, Any], required: list[str], where: str) -> None:
    """Refuse both missing and unknown fields: a default or a typo would change the model."""
    missing = [name for name in required if name not in data]
    if missing:
        raise FarmError(f"{where}: missing field(s): {', '.join(missing)}")
    unknown = sorted(set(data) - set(required))
    if unknown:
        raise FarmError(f"{where}: unknown field(s): {', '.join(unknown)}")


def _config_from_dict(data: Any, where: str) -> GPTConfig:
    """A GPTConfig from JSON with every field present (but those added later, which default)
    and of its default's exact type."""
    if not isinstance(data, dict):
        raise FarmError(f"{where}: expected a JSON object, got {type(data).__name__}")
    data = {**{name: value for name, value in ADDED_FIELDS.items() if name not in data}, **data}
    config_fields = list(fields(GPTConfig))
    _require_fields(data, [f.name for f in config_fields], where)
    for f in config_fields:
        if type(data[f.name]) is not type(f.default):
            raise FarmError(f"{where}: field {f.name!r} must be a {type(f.default).__name__}, "
                            f"got {data[f.name]!r}")
    try:
        return GPTConfig(**data)
    except FarmError as err:
        raise FarmError(f"{where}: {err}") from err


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike[str]) -> str:
    """Write `ckpt` into directory `path` atomically and return its sha256.

    Both files are staged beside their targets first; model.safetensors is
    replaced before config.json (which records its SHA-256), and a failure in
    between restores the old weights, so an interrupted save never leaves a
    mixed checkpoint behind, and a crash mid-way is caught by the SHA-256 check.
    """
    directory = Path(path)
    weights_path, config_path = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    meta = {"format_version": FORMAT_VERSION, "weights_sha256": ckpt.sha256,
            "config": ckpt.config.to_dict(), "extras": dict(ckpt.extras)}
    config_text = (json.dumps(meta, indent=2) + "\n").encode()
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        old_weights = weights_path.read_bytes() if weights_path.is_file() else None
        staged_config = stage_bytes(config_path, config_text)
        try:
            write_bytes_atomic(weights_path, ckpt.weights_bytes())
            try:
                os.replace(staged_config, config_path)
            except BaseException:
                if old_weights is None:
                    weights_path.unlink(missing_ok=True)
                else:
                    write_bytes_atomic(weights_path, old_weights)
                raise
        finally:
            staged_config.unlink(missing_ok=True)
    except OSError as err:
        if created and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        raise FarmError(f"cannot save checkpoint to {directory}: {err}") from err
    return ckpt.sha256


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint directory, refusing anything inconsistent, with the file named."""
    directory = Path(path)
    if directory.is_file():
        raise FarmError(f"checkpoint {directory} is a file, not a checkpoint directory (an "
                        "upstream smt_weights.json? `farm weights import` converts it)")
    if not directory.is_dir():
        raise FarmError(f"checkpoint directory {directory} does not exist")
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    meta = _read_json(config_path)
    _require_fields(meta, ["format_version", "weights_sha256", "config", "extras"],
                    str(config_path))
    if meta["format_version"] != FORMAT_VERSION:
        raise FarmError(f"{config_path}: format_version {meta['format_version']!r} is not "
                        f"supported (expected {FORMAT_VERSION})")
    recorded = meta["weights_sha256"]
    if not (isinstance(recorded, str) and len(recorded) == 64
            and set(recorded) <= set("0123456789abcdef")):
        raise FarmError(f"{config_path}: field 'weights_sha256' must be 64 lowercase hex "
                        f"digits, got {recorded!r}")
    config = _config_from_dict(meta["config"], f"{config_path}: field 'config'")
    try:
        extras = _check_extras(meta["extras"])
    except FarmError as err:
        raise FarmError(f"{config_path}: field 'extras': {err}") from err
    try:
        blob = weights_path.read_bytes()
    except FileNotFoundError as err:
        raise FarmError(f"missing file {weights_path}") from err
    except OSError as err:
        raise FarmError(f"cannot read {weights_path}: {err}") from err
    actual = hashlib.sha256(blob).hexdigest()
    if actual != recorded:
        raise FarmError(f"{weights_path} has SHA-256 {actual} but {config_path} records "
                        f"weights_sha256 {recorded}")
    try:
        tensors = safetensors.torch.load(blob)
    except SafetensorError as err:
        raise FarmError(f"{weights_path}: not a readable safetensors file: {err}") from err
    try:
        ckpt = Checkpoint(config, {n: _to_numpy(n, t) for n, t in tensors.items()}, extras)
    except FarmError as err:
        raise FarmError(f"{weights_path}: {err}") from err
    if ckpt.sha256 != actual:
        raise FarmError(f"{weights_path}: not in canonical form (written by another tool?): "
                        f"its tensors serialize to SHA-256 {ckpt.sha256}, the file is {actual}")
    return ckpt


# --------------------------------------------------------------------------- smt_weights.json

# Upstream scalar key -> GPTConfig field. Variant spellings are the same on both
# sides; upstream's other variants (relu, verifiable_pwl_v1/v2) have no
# counterpart here and are refused rather than guessed.
_SMT_CONFIG_FIELDS = {"d_model": "d_model", "n_layers": "n_layers", "n_heads": "n_heads",
                      "vocab_size": "vocab_size", "d_ff": "d_mlp"}
_SMT_VARIANTS = {"norm_variant": ("norm_variant", NORM_VARIANTS),
                 "attn_variant": ("attn_variant", ATTN_VARIANTS),
                 "activation_variant": ("activation", ACTIVATIONS)}
_SMT_SCALARS = [*_SMT_CONFIG_FIELDS, "head_dim", *_SMT_VARIANTS, "half_low", "half_high"]
# With norm_variant "none" the norms hold no parameters; upstream still writes them as identity.
_NORM_IDENTITY = {"weight": 1.0, "bias": 0.0}


def _smt_tensor_names(config: GPTConfig) -> list[tuple[str, str]]:
    """(upstream key, state_dict name) pairs in upstream order, for every possible tensor."""
    names = [("wte", "wte.weight"), ("wpe", "wpe.weight")]
    for i in range(config.n_layers):
        block = f"blocks.{i}"
        names += [(f"attn_{i}_W_{p}", f"{block}.attn.{p}.weight") for p in "qkvo"]
        names += [(f"attn_{i}_b_{p}", f"{block}.attn.{p}.bias") for p in "qkvo"]
        names += [(f"attn_{i}_norm_gamma", f"{block}.norm_attn.norm.weight"),
                  (f"attn_{i}_norm_beta", f"{block}.norm_attn.norm.bias"),
                  (f"mlp_{i}_W_up", f"{block}.mlp.up.weight"),
                  (f"mlp_{i}_b_up", f"{block}.mlp.up.bias"),
                  (f"mlp_{i}_W_down", f"{block}.mlp.down.weight"),
                  (f"mlp_{i}_b_down", f"{block}.mlp.down.bias"),
                  (f"mlp_{i}_norm_gamma", f"{block}.norm_mlp.norm.weight"),
                  (f"mlp_{i}_norm_beta", f"{block}.norm_mlp.norm.bias")]
    return names + [("final_norm_gamma", "norm_final.norm.weight"),
                    ("final_norm_beta", "norm_final.norm.bias"),
                    ("lm_head", "lm_head.weight"), ("lm_head_bias", "lm_head.bias")]


def _identity_norm(name: str, config: GPTConfig) -> np.ndarray | None:
    """The identity value upstream writes for a parameter-free norm, else None."""
    if config.norm_variant != "none" or ".norm." not in name:
        return None
    return np.full(config.d_model, _NORM_IDENTITY[name.rsplit(".", 1)[1]], dtype=np.float32)


def _json_array(array: np.ndarray) -> str:
    """Nested JSON lists, one matrix row a line; repr of each float32's exact double."""
    if array.ndim == 1:
        return json.dumps(array.astype(np.float64).tolist())
    rows = ",\n    ".join(_json_array(row) for row in array)
    return f"[\n    {rows}\n  ]"


def export_smt_weights(ckpt: Checkpoint, path: str | os.PathLike[str]) -> None:
    """Write `ckpt` as upstream smt_weights.json (atomically), exact to the bit."""
    config = ckpt.config
    if config.attention_only or not config.attn_bias:
        raise FarmError("smt_weights.json holds only models with MLP blocks and attention "
                        "biases; this one is attention-only or has no attention biases")
    names = [(key, name) for key, name in _smt_tensor_names(config)
             if name in ckpt.weights or _identity_norm(name, config) is not None]
    unmapped = sorted(set(ckpt.weights) - {name for _, name in names})
    if unmapped:
        raise FarmError(f"no smt_weights.json key for tensor(s): {', '.join(unmapped)}")
    scalars = {**{key: getattr(config, f) for key, f in _SMT_CONFIG_FIELDS.items()},
               "head_dim": config.head_dim,
               **{key: getattr(config, f) for key, (f, _) in _SMT_VARIANTS.items()},
               "half_low": float(config.half_low), "half_high": float(config.half_high)}
    entries = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in scalars.items()]
    if "program_heads" in ckpt.extras:
        entries.append(f'  "program_heads": {json.dumps(ckpt.extras["program_heads"])}')
    for key, name in names:
        array = ckpt.weights.get(name)
        if array is None:
            array = _identity_norm(name, config)
        entries.append(f"  {json.dumps(key)}: {_json_array(array)}")
    target = Path(path)
    try:
        write_bytes_atomic(target, ("{\n" + ",\n".join(entries) + "\n}\n").encode())
    except OSError as err:
        raise FarmError(f"cannot write {target}: {err}") from err


def _is_plain_number(value: Any) -> bool:
    """A JSON float, or an int that a double holds exactly (bools and strings are not numbers)."""
    if type(value) is float:
        return True
    try:
        return type(value) is int and float(value) == value
    except OverflowError:
        return False


def _smt_tensor(where: str, key: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Nested JSON lists -> float32, refusing any number float32 cannot hold exactly."""
    try:
        cells = np.array(value, dtype=object)
        ragged = any(isinstance(c, list) for c in cells.flat)
    except ValueError:
        ragged = True
    if ragged or cells.shape != shape:
        got = "is a ragged array" if ragged else f"has shape {cells.shape}"
        raise FarmError(f"{where}: key {key!r} {got}; expected shape {shape}")
    for index, cell in np.ndenumerate(cells):
        if not _is_plain_number(cell):
            at = "".join(f"[{i}]" for i in index)
            raise FarmError(f"{where}: {key}{at} is {cell!r}, not a float32 number")
    values = cells.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise FarmError(f"{where}: key {key!r} has {bad} non-finite value(s) (NaN/inf)")
    array = values.astype(np.float32)
    inexact = np.argwhere(array.astype(np.float64) != values)
    if len(inexact):
        index = tuple(inexact[0])
        at = "".join(f"[{i}]" for i in index)
        raise FarmError(f"{where}: {key}{at} = {float(values[index])!r} is not exactly "
                        f"representable as float32 (nearest is {float(array[index])!r}); "
                        f"{len(inexact)} such value(s) in {key!r}; importing would silently "
                        "change the model")
    return array


def import_smt_weights(path: str | os.PathLike[str]) -> Checkpoint:
    """Read upstream smt_weights.json into a Checkpoint, refusing anything it would change."""
    source = Path(path)
    where = str(source)
    data = _read_json(source)
    missing = [key for key in _SMT_SCALARS if key not in data]
    if missing:
        raise FarmError(f"{where}: missing key(s): {', '.join(missing)}")
    for key in [*_SMT_CONFIG_FIELDS, "head_dim"]:
        if type(data[key]) is not int:
            raise FarmError(f"{where}: key {key!r} must be an integer, got {data[key]!r}")
    for key, (_, allowed) in _SMT_VARIANTS.items():
        if data[key] not in allowed:
            raise FarmError(f"{where}: key {key!r} is {data[key]!r}; expected one of "
                            f"{', '.join(allowed)}")
    if not isinstance(data.get("wpe"), list) or not data["wpe"]:
        raise FarmError(f"{where}: key 'wpe' must be a non-empty matrix (its rows set seq_len)")
    try:
        config = GPTConfig(
            seq_len=len(data["wpe"]), lm_head_bias="lm_head_bias" in data,
            **{f: data[key] for key, f in _SMT_CONFIG_FIELDS.items()},
            **{f: data[key] for key, (f, _) in _SMT_VARIANTS.items()})
    except FarmError as err:
        raise FarmError(f"{where}: {err}") from err
    if data["head_dim"] != config.head_dim:
        raise FarmError(f"{where}: key 'head_dim' is {data['head_dim']}; expected "
                        f"d_model / n_heads = {config.head_dim}")
    for key in ("half_low", "half_high"):
        value, exact = data[key], getattr(config, key)
        if (not _is_plain_number(value) or not math.isfinite(value)
                or Fraction(str(value)) != exact):
            raise FarmError(f"{where}: key {key!r} is {value!r}; expected {exact} "
                            f"(= {float(exact)!r}) for d_model {config.d_model}")
    expected = _expected_shapes(config)
    names = [(key, name) for key, name in _smt_tensor_names(config)
             if name in expected or _identity_norm(name, config) is not None]
    optional = {key for key, name in names if name not in expected}
    missing = [key for key, _ in names if key not in data and key not in optional]
    if missing:
        raise FarmError(f"{where}: missing key(s): {', '.join(missing)}")
    unexpected = sorted(set(data) - set(_SMT_SCALARS) - {key for key, _ in names}
                        - set(EXTRA_FIELDS))
    if unexpected:
        raise FarmError(f"{where}: unexpected key(s): {', '.join(unexpected)}")
    weights = {}
    for key, name in names:
        if key not in data:
            continue
        identity = _identity_norm(name, config)
        shape = expected[name] if identity is None else identity.shape
        array = _smt_tensor(where, key, data[key], shape)
        if identity is None:
            weights[name] = array
        elif not np.array_equal(array, identity):
            raise FarmError(f"{where}: key {key!r} must be all {identity[0]} because "
                            "norm_variant is 'none' (the norm has no parameters)")
    extras = {key: data[key] for key in EXTRA_FIELDS if key in data}
    try:
        return Checkpoint(config, weights, extras)
    except FarmError as err:
        raise FarmError(f"{where}: {err}") from err
