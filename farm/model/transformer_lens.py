"""TransformerLens state dicts of attention-only models, to and from checkpoints.

The compact-proofs line of work trains its Max-of-K models as TransformerLens
`HookedTransformer`s (attention-only, no norm, softmax); reading their state dicts
lets the farm certify those very models. The layout, per layer l:

    embed.W_E [vocab, d]   pos_embed.W_pos [n_ctx, d]   unembed.W_U [d, vocab], b_U [vocab]
    blocks.l.attn.W_Q/W_K/W_V [heads, d, d_head]   b_Q/b_K/b_V [heads, d_head]
    blocks.l.attn.W_O [heads, d_head, d]           b_O [d]

(`blocks.l.attn.mask` and `IGNORE` are buffers, ignored). The files are safetensors
or torch state dicts (`torch.save`), chosen by the file name. The conversion is a
reshaping: every float32 weight is carried bit for bit, and a float64 or float16
one only when float32 holds it exactly. Attention biases that are all zero become
a model without them (`attn_bias=False`), as a zero unembedding bias does.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
from safetensors import SafetensorError

from farm.atomic import write_bytes_atomic
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.gpt import GPTConfig

_BUFFERS = re.compile(r"blocks\.\d+\.attn\.(mask|IGNORE)$")
_LAYER = re.compile(r"blocks\.(\d+)\.")


def is_state_dict_file(path: str | os.PathLike[str]) -> bool:
    """True for the file names this module reads and writes (else smt_weights.json)."""
    return Path(path).suffix in (".safetensors", ".pt", ".pth")


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FarmError(f"state dict file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            tensors = safetensors.numpy.load(path.read_bytes())
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict):
                raise FarmError(f"{path}: expected a state dict, got {type(loaded).__name__}")
            tensors = {}
            for name, t in loaded.items():
                if not isinstance(t, torch.Tensor):
                    raise FarmError(f"{path}: entry {name!r} is not a tensor")
                tensors[name] = t.detach().numpy()
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise FarmError(f"{path}: not a readable state dict: {err}") from err
    return {name: a for name, a in tensors.items() if not _BUFFERS.search(name)}


def _float32(where: str, name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape != shape:
        raise FarmError(f"{where}: {name} has shape {array.shape}; expected {shape}")
    if array.dtype not in (np.float16, np.float32, np.float64):
        raise FarmError(f"{where}: {name} has dtype {array.dtype}; expected floats")
    if bad := int(np.count_nonzero(~np.isfinite(array))):
        raise FarmError(f"{where}: {name} has {bad} non-finite value(s) (NaN/inf)")
    single = array.astype(np.float32)
    if not np.array_equal(single.astype(array.dtype), array):
        raise FarmError(f"{where}: {name} is {array.dtype} with values float32 cannot hold "
                        "exactly; importing would change the model")
    return single


def import_transformer_lens(path: str | os.PathLike[str], attn_variant: str = "softmax"
                            ) -> Checkpoint:
    """A checkpoint of the attention-only HookedTransformer saved at `path`."""
    source = Path(path)
    where = str(source)
    data = _read(source)
    for name in ("embed.W_E", "pos_embed.W_pos", "unembed.W_U", "blocks.0.attn.W_Q"):
        if name not in data:
            raise FarmError(f"{where}: missing {name} (an attention-only TransformerLens "
                            "state dict has embed, pos_embed, blocks.*.attn and unembed)")
    vocab, d = data["embed.W_E"].shape
    n_ctx = data["pos_embed.W_pos"].shape[0]
    heads, _, d_head = data["blocks.0.attn.W_Q"].shape
    n_layers = 1 + max(int(m[1]) for name in data if (m := _LAYER.match(name)))
    if heads * d_head != d:
        raise FarmError(f"{where}: {heads} heads of d_head {d_head} do not make d_model {d}; "
                        "the farm's model needs d_model = heads·d_head")
    layers = [f"blocks.{i}.attn" for i in range(n_layers)]
    expected = {"embed.W_E": (vocab, d), "pos_embed.W_pos": (n_ctx, d),
                "unembed.W_U": (d, vocab), "unembed.b_U": (vocab,)}
    for a in layers:
        expected |= {f"{a}.W_{p}": (heads, d, d_head) for p in "QKV"}
        expected |= {f"{a}.b_{p}": (heads, d_head) for p in "QKV"}
        expected |= {f"{a}.W_O": (heads, d_head, d), f"{a}.b_O": (d,)}
    if unknown := sorted(set(data) - set(expected)):
        raise FarmError(f"{where}: unexpected tensor(s) {', '.join(unknown)}: only attention-only "
                        "models without norms are read (no MLP, no LayerNorm)")
    zeros = {name: np.zeros(shape, np.float32) for name, shape in expected.items()
             if name.split(".")[-1].startswith("b_")}
    t = {name: _float32(where, name, data[name], shape) if name in data else zeros[name]
         for name, shape in expected.items()}
    attn_bias = any(t[f"{a}.b_{p}"].any() for a in layers for p in "QKVO")
    lm_head_bias = bool(t["unembed.b_U"].any())
    config = GPTConfig(vocab_size=vocab, seq_len=n_ctx, d_model=d, n_layers=n_layers,
                       n_heads=heads, d_mlp=0, norm_variant="none", attn_variant=attn_variant,
                       attn_bias=attn_bias, lm_head_bias=lm_head_bias)
    weights = {"wte.weight": t["embed.W_E"], "wpe.weight": t["pos_embed.W_pos"],
               "lm_head.weight": np.ascontiguousarray(t["unembed.W_U"].T)}
    if lm_head_bias:
        weights["lm_head.bias"] = t["unembed.b_U"]
    for i, a in enumerate(layers):
        ours = f"blocks.{i}.attn"
        for p in "QKV":  # W_P[h] maps x to head h: rows h·d_head.. of our [d_out, d_in]
            weights[f"{ours}.{p.lower()}.weight"] = np.ascontiguousarray(
                t[f"{a}.W_{p}"].transpose(0, 2, 1).reshape(d, d))
        weights[f"{ours}.o.weight"] = np.ascontiguousarray(
            t[f"{a}.W_O"].transpose(2, 0, 1).reshape(d, d))
        if attn_bias:
            for p in "QKV":
                weights[f"{ours}.{p.lower()}.bias"] = t[f"{a}.b_{p}"].reshape(d)
            weights[f"{ours}.o.bias"] = t[f"{a}.b_O"]
    try:
        return Checkpoint(config, weights)
    except FarmError as err:
        raise FarmError(f"{where}: {err}") from err


def export_transformer_lens(ckpt: Checkpoint, path: str | os.PathLike[str]) -> None:
    """Write an attention-only, norm-free softmax checkpoint as a HookedTransformer state
    dict (zeros for the biases it has not), atomically."""
    cfg, w = ckpt.config, ckpt.weights
    if not cfg.attention_only or cfg.norm_variant != "none" or cfg.attn_variant != "softmax":
        raise FarmError("only attention-only softmax models without norms have a "
                        "TransformerLens state dict of this layout; this one has "
                        f"d_mlp {cfg.d_mlp}, norm {cfg.norm_variant}, {cfg.attn_variant} "
                        "attention")
    d, heads, d_head = cfg.d_model, cfg.n_heads, cfg.head_dim
    out = {"embed.W_E": w["wte.weight"], "pos_embed.W_pos": w["wpe.weight"],
           "unembed.W_U": w["lm_head.weight"].T,
           "unembed.b_U": w.get("lm_head.bias", np.zeros(cfg.vocab_size, np.float32))}
    for i in range(cfg.n_layers):
        a = f"blocks.{i}.attn"
        for p in "QKV":
            out[f"{a}.W_{p}"] = w[f"{a}.{p.lower()}.weight"].reshape(heads, d_head, d
                                                                     ).transpose(0, 2, 1)
            out[f"{a}.b_{p}"] = w.get(f"{a}.{p.lower()}.bias",
                                      np.zeros(d, np.float32)).reshape(heads, d_head)
        out[f"{a}.W_O"] = w[f"{a}.o.weight"].reshape(d, heads, d_head).transpose(1, 2, 0)
        out[f"{a}.b_O"] = w.get(f"{a}.o.bias", np.zeros(d, np.float32))
    out = {name: np.ascontiguousarray(a) for name, a in out.items()}
    target = Path(path)
    if not is_state_dict_file(target):
        raise FarmError(f"{target}: name a .safetensors, .pt or .pth file")
    if target.suffix == ".safetensors":
        blob = safetensors.numpy.save(out)
    else:
        buffer = io.BytesIO()
        torch.save({name: torch.from_numpy(a.copy()) for name, a in out.items()}, buffer)
        blob = buffer.getvalue()
    try:
        write_bytes_atomic(target, blob)
    except OSError as err:
        raise FarmError(f"cannot write {target}: {err}") from err
