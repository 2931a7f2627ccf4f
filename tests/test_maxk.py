"""Max-of-K: the task, TransformerLens interop, and the soundness of every accuracy proof."""

from fractions import Fraction

import numpy as np
import pytest
import safetensors.numpy
import torch

from farm.cli import main
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.model.train import TrainConfig, train
from farm.model.transformer_lens import export_transformer_lens, import_transformer_lens
from farm.proofs.maxk.brute import brute_force
from farm.proofs.maxk.compact import cubic, subcubic
from farm.proofs.maxk.exact import ExactMaxK, Verdict
from farm.tasks.registry import get_task

TASK = get_task("max_of_k:k=3,vocab=8")


def _config(attn: str = "softmax", **changes) -> GPTConfig:
    return GPTConfig(**{"vocab_size": 8, "seq_len": 3, "d_model": 16, "n_layers": 1,
                        "d_mlp": 0, "norm_variant": "none", "attn_variant": attn,
                        "attn_bias": False, "lm_head_bias": False, **changes})


@pytest.fixture(scope="module")
def models() -> dict[str, Checkpoint]:
    """Softmax models from untrained to well trained, a sparsemax one, one with biases."""
    out = {}
    for steps in (1, 40, 600):
        result = train(_config(), TrainConfig(tasks=(TASK.name,), max_steps=steps, seed=1,
                                              margin_goal=4.0, hinge=6.0), progress=False)
        out[f"softmax-{steps}"] = Checkpoint.from_model(result.model)
    result = train(_config("sparsemax"), TrainConfig(tasks=(TASK.name,), max_steps=300,
                                                     seed=1), progress=False)
    out["sparsemax-300"] = Checkpoint.from_model(result.model)
    torch.manual_seed(2)
    out["biased"] = Checkpoint.from_model(VerifiableGPT(_config(attn_bias=True,
                                                                lm_head_bias=True)))
    return out


def _truth(ckpt: Checkpoint) -> dict[Verdict, int]:
    model = ExactMaxK(ckpt.config, ckpt.weights, TASK)
    verdicts = [model.decide(p) for p in TASK.domain()]
    return {v: verdicts.count(v) for v in Verdict}


def test_the_task_is_every_prompt_of_k_values_with_the_maximum_as_answer():
    task = get_task("max_of_k")
    assert task.name == "max_of_k" and len(task.domain()) == 64 ** 4 and task.seq_len == 4
    assert task.vocab_size == 64 and task.candidates == tuple(range(64))
    batch = task.domain().batch(1_000_000, 1_000_005)
    assert (batch[:, 0] == 1_000_000 // 64 ** 3).all()  # position 0 most significant
    assert task.targets(batch).tolist() == [max(p) for p in batch.tolist()]
    assert TASK.domain()[0b001_111_010] == (1, 7, 2) and TASK.target((1, 7, 2)) == 7
    with pytest.raises(FarmError, match="k must be"):
        get_task("max_of_k:k=1")


def test_brute_force_is_the_exact_accuracy(models):
    for name, ckpt in models.items():
        bound = brute_force(ckpt.config, ckpt.weights, TASK)
        truth = _truth(ckpt)
        assert (bound.correct, bound.ties, bound.wrong) == (
            truth[Verdict.CORRECT], truth[Verdict.TIE], truth[Verdict.WRONG]), name
        assert bound.total == 512 and bound.accuracy == Fraction(bound.correct, 512)
    assert brute_force(models["softmax-600"].config, models["softmax-600"].weights,
                       TASK).correct == 512


def test_brute_force_agrees_with_the_float64_forward_where_margins_are_clear(models):
    ckpt = models["softmax-40"]
    prompts = torch.tensor(TASK.domain().batch(0, 512))
    logits = ckpt.to_model(torch.float64)(prompts)[:, -1].detach().numpy()
    targets = TASK.targets(prompts.numpy())
    right = (logits.argmax(1) == targets).sum()
    assert brute_force(ckpt.config, ckpt.weights, TASK).correct == right


def test_exact_ties_are_proved_and_not_counted_correct():
    """Two identical unembedding rows: those values' logits tie exactly on every prompt."""
    torch.manual_seed(0)
    model = VerifiableGPT(_config())
    with torch.no_grad():
        model.lm_head.weight[6] = model.lm_head.weight[7]
        model.lm_head.weight[7] *= 1  # the same float32 values, bit for bit
        model.lm_head.weight[:6] *= 0.01  # small rows: 6 and 7 beat every other value
    ckpt = Checkpoint.from_model(model)
    bound = brute_force(ckpt.config, ckpt.weights, TASK)
    truth = _truth(ckpt)
    assert truth[Verdict.TIE] > 0 and bound.ties == truth[Verdict.TIE]
    assert bound.correct == truth[Verdict.CORRECT]


def test_every_compact_bound_is_at_most_the_true_accuracy(models):
    for name, ckpt in models.items():
        if ckpt.config.attn_variant != "softmax":
            continue
        truth = _truth(ckpt)[Verdict.CORRECT]
        for strategy in (cubic, subcubic):
            bound = strategy(ckpt.config, ckpt.weights, TASK)
            assert 0 <= bound.correct <= truth, (name, bound)
            assert bound.flops > 0
    trained = models["softmax-600"]
    assert cubic(trained.config, trained.weights, TASK).correct >= 0.9 * 512
    # the subcubic proof never builds the vocab³ logit table: fewer FLOPs at vocab 64
    task = get_task("max_of_k:k=4,vocab=64")
    torch.manual_seed(0)
    big = Checkpoint.from_model(VerifiableGPT(_config(vocab_size=64, seq_len=4, d_model=32)))
    assert (subcubic(big.config, big.weights, task).flops
            < cubic(big.config, big.weights, task).flops / 2)


def test_sparsemax_exact_decisions_match_the_farms_exact_evaluator():
    torch.manual_seed(5)
    ckpt = Checkpoint.from_model(VerifiableGPT(_config("sparsemax")))
    ours = ExactMaxK(ckpt.config, ckpt.weights, TASK)
    prompts = list(TASK.domain())[::7]
    rows = ExactModel(ckpt.config, ckpt.weights).run(prompts)
    for prompt, row in zip(prompts, rows, strict=True):
        m = max(prompt)
        best_rival = max(v for c, v in enumerate(row.logits) if c != m)
        expected = (Verdict.CORRECT if row.logits[m] > best_rival else
                    Verdict.TIE if row.logits[m] == best_rival else Verdict.WRONG)
        assert ours.decide(prompt) is expected, prompt
    with pytest.raises(FarmError, match="softmax"):
        subcubic(ckpt.config, ckpt.weights, TASK)


def test_sparsemax_brute_force_is_the_farm_exact_evaluators_accuracy(models):
    """Every prompt through `farm.model.exact` (the evaluator the verify route uses, exact
    rationals through the whole forward): its decisions counted are the brute force's."""
    for ckpt in (models["sparsemax-300"],
                 Checkpoint.from_model(VerifiableGPT(_config("sparsemax")))):
        counts = {verdict: 0 for verdict in Verdict}
        for prompt, row in zip(TASK.domain(), ExactModel(ckpt.config, ckpt.weights).run(
                list(TASK.domain())), strict=True):
            m = max(prompt)
            best_rival = max(v for c, v in enumerate(row.logits) if c != m)
            counts[Verdict.CORRECT if row.logits[m] > best_rival else
                   Verdict.TIE if row.logits[m] == best_rival else Verdict.WRONG] += 1
        bound = brute_force(ckpt.config, ckpt.weights, TASK)
        assert (bound.correct, bound.ties, bound.wrong) == (
            counts[Verdict.CORRECT], counts[Verdict.TIE], counts[Verdict.WRONG])
    assert bound.correct < 512 and bound.wrong > 0  # the untrained model: not trivial


def test_the_cubic_bound_of_sparsemax_models_is_at_most_their_accuracy(models):
    trained = models["sparsemax-300"]
    bounds = [cubic(ckpt.config, ckpt.weights, TASK).correct for ckpt in
              (trained, Checkpoint.from_model(VerifiableGPT(_config("sparsemax"))))]
    truths = [_truth(ckpt)[Verdict.CORRECT] for ckpt in
              (trained, Checkpoint.from_model(VerifiableGPT(_config("sparsemax"))))]
    assert all(0 <= b <= t for b, t in zip(bounds, truths, strict=True)), (bounds, truths)
    assert bounds[0] > 0.5 * 512, (bounds, truths)  # the mechanism is there to use


def test_proofs_refuse_models_they_do_not_describe():
    ckpt = Checkpoint.from_model(VerifiableGPT(GPTConfig()))
    with pytest.raises(FarmError, match="attention-only"):
        brute_force(ckpt.config, ckpt.weights, TASK)


# --------------------------------------------------------------------------- TransformerLens


def _hooked_state_dict(rng: np.random.Generator, biases: bool) -> dict[str, np.ndarray]:
    """An attention-only HookedTransformer's state dict, written out by hand."""
    heads, d, d_head, vocab, n_ctx = 2, 8, 4, 8, 3

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def b(*shape):
        return r(*shape) if biases else np.zeros(shape, np.float32)

    return {"embed.W_E": r(vocab, d), "pos_embed.W_pos": r(n_ctx, d),
            "blocks.0.attn.W_Q": r(heads, d, d_head), "blocks.0.attn.W_K": r(heads, d, d_head),
            "blocks.0.attn.W_V": r(heads, d, d_head), "blocks.0.attn.W_O": r(heads, d_head, d),
            "blocks.0.attn.b_Q": b(heads, d_head), "blocks.0.attn.b_K": b(heads, d_head),
            "blocks.0.attn.b_V": b(heads, d_head), "blocks.0.attn.b_O": b(d),
            "unembed.W_U": r(d, vocab), "unembed.b_U": b(vocab)}


def _hooked_forward(sd: dict[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
    """HookedTransformer's attention-only forward in float64, as TransformerLens defines it."""
    f = {k: v.astype(np.float64) for k, v in sd.items()}
    a = "blocks.0.attn."
    x = f["embed.W_E"][tokens] + f["pos_embed.W_pos"][: tokens.shape[1]]
    q = np.einsum("bpd,hde->bphe", x, f[a + "W_Q"]) + f[a + "b_Q"]
    k = np.einsum("bpd,hde->bphe", x, f[a + "W_K"]) + f[a + "b_K"]
    v = np.einsum("bpd,hde->bphe", x, f[a + "W_V"]) + f[a + "b_V"]
    scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(q.shape[-1])
    n = tokens.shape[1]
    scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
    pattern = np.exp(scores - scores.max(-1, keepdims=True))
    pattern /= pattern.sum(-1, keepdims=True)
    z = np.einsum("bhqk,bkhe->bqhe", pattern, v)
    x = x + np.einsum("bqhe,hed->bqd", z, f[a + "W_O"]) + f[a + "b_O"]
    return x @ f["unembed.W_U"] + f["unembed.b_U"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("biases", [True, False])
def test_a_transformer_lens_state_dict_round_trips_and_computes_the_same(tmp_path, suffix,
                                                                        biases):
    sd = _hooked_state_dict(np.random.default_rng(0), biases)
    source = tmp_path / f"hooked{suffix}"
    if suffix == ".pt":
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, source)
    else:
        source.write_bytes(safetensors.numpy.save(sd))
    assert main(["weights", "import", str(source), "--out", str(tmp_path / "ck")]) == 0
    ckpt = load_checkpoint(tmp_path / "ck")
    assert ckpt.config.attention_only and ckpt.config.n_heads == 2
    assert ckpt.config.attn_bias is biases and ckpt.config.lm_head_bias is biases
    tokens = np.array([[0, 5, 7], [3, 3, 1], [6, 2, 4]])
    ours = ckpt.to_model(torch.float64)(torch.from_numpy(tokens)).detach().numpy()
    assert np.abs(ours - _hooked_forward(sd, tokens)).max() < 1e-9
    back = tmp_path / f"back{suffix}"
    assert main(["weights", "export", "--checkpoint", str(tmp_path / "ck"),
                 "--out", str(back)]) == 0
    again = import_transformer_lens(back)
    assert again == ckpt
    exported = (safetensors.numpy.load(back.read_bytes()) if suffix == ".safetensors" else
                {k: v.numpy() for k, v in torch.load(back, weights_only=True).items()})
    assert set(exported) == set(sd)
    assert all(np.array_equal(exported[k], sd[k]) for k in sd)


def test_bad_state_dicts_are_refused_by_name(tmp_path):
    rng = np.random.default_rng(1)
    for change, message in (
            (lambda sd: sd.__setitem__("blocks.0.attn.W_K", sd["blocks.0.attn.W_K"][:, :, :3]),
             "W_K has shape"),
            (lambda sd: sd["blocks.0.attn.W_V"].__setitem__((0, 0, 0), np.nan), "non-finite"),
            (lambda sd: sd.__setitem__("blocks.0.mlp.W_in", np.zeros((8, 8), np.float32)),
             "unexpected tensor"),
            (lambda sd: sd.pop("embed.W_E"), "missing embed.W_E"),
            (lambda sd: sd.__setitem__("unembed.W_U", sd["unembed.W_U"].astype(np.float64) / 3),
             "float32 cannot hold")):
        sd = _hooked_state_dict(rng, biases=True)
        change(sd)
        path = tmp_path / "bad.safetensors"
        path.write_bytes(safetensors.numpy.save(sd))
        with pytest.raises(FarmError, match=message):
            import_transformer_lens(path)
    with pytest.raises(FarmError, match="attention-only softmax"):
        export_transformer_lens(Checkpoint.from_model(VerifiableGPT(GPTConfig())),
                                tmp_path / "x.pt")


def test_farm_bench_maxk_writes_the_study(tmp_path, models):
    source = tmp_path / "given"
    save_checkpoint(models["softmax-600"], source)
    out = tmp_path / "study"
    assert main(["bench", "maxk", "--task", TASK.name, "--seeds", "1", "--steps", "20",
                 "--width", "16", "--checkpoint", str(source), "--out", str(out)]) == 0
    lines = (out / "maxk_study.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 3  # a trained seed and the given checkpoint, 3 strategies
    given = [line.split(",") for line in lines if line.startswith(models["softmax-600"]
                                                                  .sha256[:12])]
    assert [row[1] for row in given] == ["brute_force", "cubic", "subcubic"]
    assert given[0][2] == "512" and int(given[1][2]) <= 512
    assert (out / "maxk_study.png").read_bytes()[:4] == b"\x89PNG"
    assert load_checkpoint(out / "seed-0").config.attention_only
    assert main(["bench", "maxk", "--task", "quote_close", "--out", str(tmp_path / "x")]) == 2


def test_farm_train_sizes_a_max_of_k_model_from_the_task(tmp_path):
    out = tmp_path / "ck"
    status = main(["train", "--tasks", TASK.name, "--layers", "1", "--width", "16", "--mlp",
                   "0", "--norm", "none", "--attn", "softmax", "--no-attn-bias",
                   "--no-unembed-bias", "--max-steps", "5", "--out", str(out)])
    assert status in (0, 1)  # five steps rarely reach the margin; the checkpoint is saved
    config = load_checkpoint(out).config
    assert (config.vocab_size, config.seq_len, config.attention_only) == (8, 3, True)
    bound = brute_force(config, load_checkpoint(out).weights, TASK)
    assert bound.correct + bound.ties + bound.wrong == 512


def test_the_exact_path_rows_are_the_models_semantics_biases_included(models):
    """Σ_i softmax(S)_i g_i is the model's last-position logits: the decomposition every
    proof rests on, checked against the torch forward on a model with every bias."""
    ckpt = models["biased"]
    model = ckpt.to_model(torch.float64)
    rows = ExactMaxK(ckpt.config, ckpt.weights, TASK)
    for prompt in [(0, 0, 0), (7, 1, 3), (2, 6, 6), (5, 4, 7)]:
        scores, logits = rows.rows(prompt)
        weights = torch.softmax(torch.tensor([float(s) for s in scores], dtype=torch.float64), 0)
        ours = weights @ torch.tensor([[float(v) for v in g] for g in logits],
                                      dtype=torch.float64)
        theirs = model(torch.tensor([prompt]))[0, -1]
        assert torch.allclose(ours, theirs, atol=1e-9), prompt


def test_k20_trains_on_a_domain_past_int64_and_its_compact_bound_is_an_exact_count():
    """64^20 ≈ 1.3e36 prompts: no index fits int64, so minibatches are drawn position by
    position and the proofs count with Python integers."""
    task = get_task("max_of_k:k=20,vocab=64")
    assert task.domain().size == 64 ** 20
    draw = np.random.default_rng(0)
    prompts = task.domain().sample(draw, 4096)
    assert prompts.shape == (4096, 20) and prompts.min() == 0 and prompts.max() == 63
    assert abs(prompts.mean() - 31.5) < 0.5  # uniform per position
    config = GPTConfig(vocab_size=64, seq_len=20, d_model=8, n_layers=1, d_mlp=0,
                       norm_variant="none", attn_variant="softmax", attn_bias=False,
                       lm_head_bias=False)
    result = train(config, TrainConfig(tasks=(task.name,), max_steps=3, batch_size=64,
                                       final_pass=False), progress=False)
    ckpt = Checkpoint.from_model(result.model)
    for bound in (cubic(ckpt.config, ckpt.weights, task),
                  subcubic(ckpt.config, ckpt.weights, task)):
        assert bound.total == 64 ** 20 and 0 <= bound.correct <= bound.total


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_boxes_of_a_query_and_maximum_partition_its_prompts(n):
    """Stage 1 of the brute force sums over these boxes: each free-token tuple of a
    prompt with query q and maximum m lies in exactly one of them."""
    import itertools

    from farm.proofs.maxk.brute import boxes

    vocab = 5
    for q in range(vocab):
        for m in range(q, vocab):
            covered = [t for box in boxes(n, q, m)
                       for t in itertools.product(*(range(lo, hi) for lo, hi in box))]
            expected = [t for t in itertools.product(range(vocab), repeat=n)
                        if max(*t, q) == m]
            assert sorted(covered) == sorted(expected) and len(set(covered)) == len(covered)
