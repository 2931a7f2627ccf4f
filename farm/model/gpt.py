"""The verifiable GPT: a whole model in one file, every activation hookable by name.

The solver-friendly variant (Signed L1 BandNorm, sparsemax attention, LeakyReLU)
is piecewise linear, so an SMT solver can reason about it exactly; the standard
variant (LayerNorm, softmax, GELU) trains the same way and feeds the surrogate
path. Each intermediate value passes through a `HookPoint`, so circuits and
tracers can read or patch it by name (`blocks.0.attn.hook_pattern`, ...), as in
TransformerLens. `farm.model.exact` evaluates the same function in exact rationals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from farm.errors import FarmError

NORM_VARIANTS = ("signed_l1_band_norm", "none", "layer_norm")
ATTN_VARIANTS = ("sparsemax", "softmax")
ACTIVATIONS = ("leaky_relu", "gelu")
LEAKY_SLOPE = Fraction(1, 100)


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of a verifiable GPT. Defaults are the paper-size model (~7.7k params)."""

    vocab_size: int = 32
    seq_len: int = 6
    d_model: int = 16
    n_layers: int = 2
    n_heads: int = 1
    d_mlp: int = 64
    norm_variant: str = "signed_l1_band_norm"
    attn_variant: str = "sparsemax"
    activation: str = "leaky_relu"
    lm_head_bias: bool = True
    attn_bias: bool = True  # False: W_q, W_k, W_v, W_o without biases (frozen at zero)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("norm_variant", NORM_VARIANTS),
            ("attn_variant", ATTN_VARIANTS),
            ("activation", ACTIVATIONS),
        ):
            if getattr(self, name) not in allowed:
                raise FarmError(f"config field {name!r} is {getattr(self, name)!r}; "
                                f"expected one of {', '.join(allowed)}")
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "d_mlp"):
            value, least = getattr(self, name), 0 if name == "d_mlp" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                kind = "non-negative" if least == 0 else "positive"
                raise FarmError(f"config field {name!r} must be a {kind} integer, got {value!r}")
        for name in ("lm_head_bias", "attn_bias"):
            if not isinstance(getattr(self, name), bool):
                raise FarmError(f"config field {name!r} must be true or false, "
                                f"got {getattr(self, name)!r}")
        if self.d_model % self.n_heads:
            raise FarmError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def half_low(self) -> Fraction:
        """BandNorm's lower band, 0.55·d/2 taken exactly as written (22/5 for d = 16)."""
        return Fraction(11, 20) * self.d_model / 2

    @property
    def half_high(self) -> Fraction:
        """BandNorm's upper band, 1.05·d/2 (42/5 for d = 16)."""
        return Fraction(21, 20) * self.d_model / 2

    @property
    def attn_scale(self) -> float:
        """The float32 value of sqrt(head_dim): the exact divisor of the attention scores."""
        return float(np.float32(math.sqrt(self.head_dim)))

    @property
    def attention_only(self) -> bool:
        """No MLP blocks (d_mlp = 0): the Max-of-K and induction-head models."""
        return self.d_mlp == 0

    @property
    def is_piecewise_linear(self) -> bool:
        """True when the model is in the exact-verifiable family (SMT, exact evaluator)."""
        return (self.norm_variant != "layer_norm" and self.attn_variant == "sparsemax"
                and self.activation == "leaky_relu")

    def to_dict(self) -> dict[str, Any]:
        """The fields, leaving out later additions at their defaults: a model that does not
        use them keeps the config.json (and certificates) it had before they existed."""
        return {name: value for name, value in asdict(self).items()
                if not (name in ADDED_FIELDS and value == ADDED_FIELDS[name])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FarmError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)


# Fields added after checkpoints were first written, with the default an absent one means.
ADDED_FIELDS: dict[str, Any] = {"attn_bias": True}


def require_mlp_blocks(config: GPTConfig, what: str) -> None:
    """Refuse an attention-only model where `what` is built on the MLP-block graph."""
    if config.attention_only:
        raise FarmError(f"{what}: attention-only models (d_mlp = 0) are not supported yet")


# --------------------------------------------------------------------------- operators


def sparsemax(z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sparsemax over the last axis; `mask` (True = allowed) restricts the support.

    k = largest k with 1 + k·z_(k) > Σ_{j≤k} z_(j), tau = (Σ_{j≤k} z_(j) − 1)/k,
    output max(z − tau, 0). Masked entries sort last and never enter the support.
    """
    if mask is not None:
        z = z.masked_fill(~mask, torch.finfo(z.dtype).min / 4)
    z_sorted, _ = torch.sort(z, dim=-1, descending=True)
    ks = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cumsum = z_sorted.cumsum(-1)
    in_support = 1 + ks * z_sorted > cumsum
    # the condition holds exactly for k = 1..k_max, k = 1 always: only a non-finite z
    # (float32 overflow) can leave none, and then the output is not finite either
    k = in_support.sum(-1, keepdim=True).clamp(min=1)
    tau = (cumsum.gather(-1, k - 1) - 1) / k.to(z.dtype)
    return torch.clamp(z - tau, min=0)


def _band_side(s: torch.Tensor, fallback: torch.Tensor, half_low: float,
               half_high: float) -> torch.Tensor:
    """One side of BandNorm: project onto {Σ ≤ half_high}, then lift to Σ ≥ half_low."""
    d = s.shape[-1]
    s_sorted, _ = torch.sort(s, dim=-1, descending=True)
    ks = torch.arange(1, d + 1, device=s.device, dtype=s.dtype)
    cand = (s_sorted.cumsum(-1) - half_high) / ks
    rho = ((s_sorted > cand).sum(-1, keepdim=True) - 1).clamp(0, d - 1)
    projected = torch.clamp(s - cand.gather(-1, rho), min=0)
    s = torch.where(s.sum(-1, keepdim=True) > half_high, projected, s)
    deficit = torch.clamp(half_low - s.sum(-1, keepdim=True), min=0)
    active = s > 0
    active = torch.where(active.any(-1, keepdim=True), active, fallback)
    return s + deficit / active.sum(-1, keepdim=True) * active


class BandNorm(nn.Module):
    """Signed L1 BandNorm: no epsilon, no square root, piecewise linear (SPEC §2)."""

    def __init__(self, d: int, half_low: Fraction, half_high: Fraction):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.half_low, self.half_high = float(half_low), float(half_high)
        even = torch.arange(d) % 2 == 0
        self.register_buffer("even", even, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x - x.mean(-1, keepdim=True)
        p = _band_side(torch.clamp(c, min=0), self.even, self.half_low, self.half_high)
        n = _band_side(torch.clamp(-c, min=0), ~self.even, self.half_low, self.half_high)
        z = p - n
        z = z - z.mean(-1, keepdim=True)
        return self.weight * z + self.bias


class HookPoint(nn.Identity):
    """An identity whose module name is the activation's name; hooks attach here."""


class Norm(nn.Module):
    """The configured normalisation, with its output hookable as `hook_normalized`."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.norm_variant == "signed_l1_band_norm":
            self.norm: nn.Module = BandNorm(cfg.d_model, cfg.half_low, cfg.half_high)
        elif cfg.norm_variant == "layer_norm":
            self.norm = nn.LayerNorm(cfg.d_model)
        else:
            self.norm = nn.Identity()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(self.norm(x))


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=cfg.attn_bias) for _ in range(4))
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_scores, self.hook_pattern = HookPoint(), HookPoint()
        self.hook_z = HookPoint()  # per-head results before W_o: the circuit's head nodes
        causal = torch.tril(torch.ones(cfg.seq_len, cfg.seq_len, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """Head results [batch, pos, head, head_dim] for normalised input x [batch, pos, d]."""
        b, t, _ = x.shape
        split = (b, t, self.cfg.n_heads, self.cfg.head_dim)
        q = self.hook_q(self.q(x).view(split))
        k = self.hook_k(self.k(x).view(split))
        v = self.hook_v(self.v(x).view(split))
        scores = self.hook_scores(torch.einsum("bihd,bjhd->bhij", q, k) / self.cfg.attn_scale)
        mask = self.causal[:t, :t]
        if self.cfg.attn_variant == "sparsemax":
            pattern = sparsemax(scores, mask)
        else:
            pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        pattern = self.hook_pattern(pattern)
        return self.hook_z(torch.einsum("bhij,bjhd->bihd", pattern, v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.heads(x)
        return self.o(z.flatten(-2))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.activation: Callable[[torch.Tensor], torch.Tensor] = (
            (lambda h: F.leaky_relu(h, float(LEAKY_SLOPE))) if cfg.activation == "leaky_relu"
            else F.gelu)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.hook_post(self.activation(self.hook_pre(self.up(x)))))


class Block(nn.Module):
    """Pre-norm residual block: h = x + Attn(Norm(x)); h = h + MLP(Norm(h)).
    An attention-only block (d_mlp = 0) stops after the attention."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.has_mlp = not cfg.attention_only
        self.norm_attn, self.attn = Norm(cfg), Attention(cfg)
        if self.has_mlp:
            self.norm_mlp, self.mlp = Norm(cfg), MLP(cfg)
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_resid_mid = HookPoint()
        if self.has_mlp:
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        h = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.norm_attn(x))))
        if self.has_mlp:
            h = h + self.hook_mlp_out(self.mlp(self.norm_mlp(h)))
        return self.hook_resid_post(h)


class VerifiableGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.hook_embed = HookPoint()  # token + position embedding: the circuit's `emb` node
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_final = Norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.lm_head_bias)
        self.hook_logits = HookPoint()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [batch, pos, vocab] for token ids [batch, pos]."""
        if tokens.dim() != 2 or tokens.shape[1] > self.cfg.seq_len:
            raise FarmError(f"tokens must be [batch, ≤{self.cfg.seq_len}], got "
                            f"{tuple(tokens.shape)}")
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.hook_embed(self.wte(tokens) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.hook_logits(self.lm_head(self.norm_final(x)))

    def hook_names(self) -> list[str]:
        return [name for name, m in self.named_modules() if isinstance(m, HookPoint)]

    def run_with_cache(self, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass that also returns every hooked activation by name."""
        cache: dict[str, torch.Tensor] = {}
        handles = [
            m.register_forward_hook(lambda _m, _i, out, name=name: cache.__setitem__(name, out))
            for name, m in self.named_modules() if isinstance(m, HookPoint)
        ]
        try:
            logits = self(tokens)
        finally:
            for h in handles:
                h.remove()
        return logits, cache

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
