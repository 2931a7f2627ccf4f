"""Induction certificates: derived exactly from the weights, readable by NFP's rules,
and re-derived by the checker, which rejects any number that was changed."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from actors.induction import ray_runner
from farm.cli import main
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.proofs.induction.check import check_certificate
from farm.proofs.induction.derive import HeadRef, InductionProver
from farm.proofs.induction.domain import certify_domain, check_domain
from farm.proofs.induction.nfp import Gates, logit_diff_bound, parse, rejections
from farm.tasks.registry import get_task
from tests.conftest import embedded_ray

TASK = get_task("induction")
HEAD = HeadRef(1, 0)
TOKENS, POSITIONS, COPIED = 0, 8, 17  # residual dims: pattern token, position, copied token


def induction_checkpoint(gain: float = 16.0, attention: str = "sparsemax") -> Checkpoint:
    """A hand-built 2-layer model whose layer-1 head is a perfect induction head: each
    query from position 3 on attends to the position period − 1 = 3 back (a score gap of
    gain/√32) and copies that token into dims the unembedding reads (logit 10)."""
    cfg = GPTConfig(seq_len=8, d_model=32, d_mlp=0, norm_variant="none", attn_variant=attention)
    model = VerifiableGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for i, token in enumerate(TASK.candidates):
            model.wte.weight[token, TOKENS + i] = 1
            model.blocks[1].attn.v.weight[TOKENS + i, TOKENS + i] = 1
            model.blocks[1].attn.o.weight[COPIED + i, TOKENS + i] = 1
            model.lm_head.weight[token, COPIED + i] = 10
        for p in range(cfg.seq_len):
            model.wpe.weight[p, POSITIONS + p] = 1
            model.blocks[1].attn.k.weight[POSITIONS + p, POSITIONS + p] = 1
            if p >= TASK.period - 1:
                model.blocks[1].attn.q.weight[POSITIONS + p - TASK.period + 1,
                                              POSITIONS + p] = gain
    return Checkpoint.from_model(model)


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    return induction_checkpoint()


@pytest.fixture(scope="module")
def text(checkpoint: Checkpoint) -> str:
    return InductionProver(checkpoint, TASK, HEAD).certificate(1234).render()


def test_certificate_states_the_exact_stripe_copying_and_decision(text: str) -> None:
    cert = parse(text)
    prompt = TASK.domain()[1234]
    target = prompt[4]
    assert cert.seq == 8 and cert.active == (7,) and cert.prev[7] == 4
    assert cert.weight[7, 4] == 1 and cert.eps == 0 and cert.eps_at[7] == 0
    assert sum(cert.weight[7, k] for k in range(8)) == 1
    assert cert.margin == Fraction(16) / Fraction(float(torch.tensor(32.0).sqrt().item()))
    assert cert.direction[0] == target and cert.direction[1] != target
    assert logit_diff_bound(cert) == 10 == cert.val[4]
    farm = {words[0]: words[1:] for words in cert.farm}
    assert farm["query"] == ("7", "4", str(target))
    assert farm["decision"][0] == str(target) and Fraction(farm["decision"][2]) == 10
    assert farm["certified"] == ("yes",)
    copy = [Fraction(w[3]) for w in cert.farm if w[0] == "copy-lb"]
    assert len(copy) == len(TASK.candidates) - 1 and min(copy) == 10


def test_nfp_rules_accept_ours_and_parse_round_trips(text: str) -> None:
    cert = parse(text)
    assert parse(cert.render()) == cert and cert.render() == text
    assert rejections(cert) == []
    assert rejections(cert, Gates(min_margin=cert.margin, max_eps=Fraction(0), min_active=1,
                                  min_logit_diff=Fraction(10))) == []
    assert rejections(cert, Gates(min_logit_diff=Fraction(11)))
    assert rejections(cert, Gates(min_margin=cert.margin + 1))
    assert all(line.split()[0] in {"seq", "kind", "direction-target", "direction-negative",
                                   "eps", "margin", "lo", "hi", "active", "prev", "eps-at",
                                   "val", "val-lo", "val-hi", "score", "weight",
                                   "weight-bound"} or line.startswith("# farm ")
               for line in text.splitlines())
    assert not re.search(r"\d\.\d", text)  # NFP reads no decimals


@pytest.mark.parametrize("edit, complaint", [
    (("seq 8", "seq 8\nseq 8"), "seq must appear once"),
    (("eps 0", "eps 0.0"), "no decimals"),
    (("eps 0", "eps 0 # exact"), "eps must appear once"),
    (("prev 7 4", "prev 7 8"), "out of range"),
    (("weight 7 4 1\n", ""), "weight has 63 of its 64"),
    (("val 4 10", "val 4 10\nval 4 10"), "val 4 twice"),
])
def test_nfp_lexing_is_as_strict_as_nfp(text: str, edit: tuple[str, str], complaint: str
                                        ) -> None:
    assert edit[0] in text
    with pytest.raises(FarmError, match=complaint):
        parse(text.replace(edit[0], edit[1], 1))


def test_checker_re_derives_an_untouched_certificate(checkpoint: Checkpoint, text: str) -> None:
    check_certificate(parse(text), checkpoint, "cert")


def _swap(text: str, pattern: str, replacement: str) -> str:
    changed, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert count == 1, pattern
    return changed


@pytest.mark.parametrize("pattern, replacement, complaint", [
    (r"^weight-bound 7 6 0$", "weight-bound 7 6 1/2", "weight-bound 7 6 is 1/2"),
    (r"^prev 7 4$", "prev 7 1", "prev 7 is 1"),
    (r"^# farm query 7 4 (\d+)$", r"# farm query 7 1 \1", "not on the induction stripe"),
    (r"^margin (\S+)$", r"margin 3", "margin is 3"),
    (r"^eps 0$", "eps 1/100", "eps is 1/100"),
    (r"^(# farm copy-lb 7 \d+) 10$", r"\1 11", "farm line 8"),
    (r"^(# farm decision \d+ \d+) 10$", r"\1 12", "farm line"),
    (r"^score 7 2 0$", "score 7 2 -1", "score 7 2 is -1"),
    (r"^# farm checkpoint \w+$", "# farm checkpoint " + "0" * 64, "not this one"),
    (r"^# farm prompt 1234 1 ", "# farm prompt 1235 1 ", "prompt 1235 of induction is"),
])
def test_checker_rejects_every_tampered_number(checkpoint: Checkpoint, text: str,
                                               pattern: str, replacement: str,
                                               complaint: str) -> None:
    tampered = parse(_swap(text, pattern, replacement))
    with pytest.raises(FarmError, match=re.escape(complaint)):
        check_certificate(tampered, checkpoint, "cert")


def test_a_loosened_weight_bound_passes_nfp_but_not_the_farm(checkpoint: Checkpoint,
                                                             text: str) -> None:
    """NFP only asks a bound to be above its weight: the binding to the weights is ours."""
    loose = parse(_swap(text, r"^weight-bound 7 4 1$", "weight-bound 7 4 2"))
    assert rejections(loose) == []
    with pytest.raises(FarmError, match="weight-bound 7 4 is 2"):
        check_certificate(loose, checkpoint, "cert")


def test_a_weak_head_is_stated_but_not_certified() -> None:
    """A score gap below sparsemax's 1 spreads weight, and ε > 0 is stated exactly; a head
    that looks elsewhere gets a certificate that says so, and is not certified."""
    weak = InductionProver(induction_checkpoint(gain=2.0), TASK, HEAD).certificate(1234)
    assert 0 < weak.eps < 1 and weak.weight[7, 4] == 1 - weak.eps
    off = InductionProver(induction_checkpoint(gain=-16.0), TASK, HEAD).certificate(1234)
    assert off.weight[7, 4] == 0 and off.margin < 0
    assert ("certified", "no") in off.farm and rejections(off)
    assert logit_diff_bound(off) < 0 and off.direction is None  # NFP would refuse the pair
    assert ("direction", str(TASK.domain()[1234][4]), str(off.farm[5][2])) == off.farm[5]


def test_domain_certify_and_check(checkpoint: Checkpoint, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    summary, seconds = certify_domain(checkpoint, TASK, HEAD, out, range(64), progress=False)
    assert (summary.prompts, summary.certified) == (64, 64) and seconds > 0
    assert summary.max_eps == 0 and summary.min_copy == 10 == summary.min_decision
    assert summary.min_nfp_logit_diff == 10 and summary.nfp_directions == 64
    assert summary.nfp_accepted == 64
    assert summary.mean_stripe_weight == 1
    batch = (out / "batch.nfp").read_text().splitlines()
    assert batch[:5] == ["min-active 1", f"min-margin {summary.min_margin}", "max-eps 0",
                         "min-logit-diff 10", "min-avg-logit-diff 10"]
    assert len([b for b in batch if b.startswith("item items/")]) == 64
    assert json.loads((out / "summary.json").read_text())["certified"] == 64
    assert check_domain(checkpoint, out, progress=False) == summary
    with pytest.raises(FarmError, match="exists"):
        certify_domain(checkpoint, TASK, HEAD, out, range(2), progress=False)
    (out / "batch.nfp").write_text((out / "batch.nfp").read_text().replace(
        "min-logit-diff 10", "min-logit-diff 11"))
    with pytest.raises(FarmError, match="gates are not the aggregates"):
        check_domain(checkpoint, out, progress=False)


def test_a_job_on_ray_actors_writes_what_one_process_writes(checkpoint: Checkpoint,
                                                            tmp_path: Path) -> None:
    """Units of 5 prompts over two real Ray actors: the same files, batch and aggregates
    (minimum and mean reduced unit by unit) as one process, and `farm check` accepts them."""
    here, there = tmp_path / "here", tmp_path / "there"
    weak = induction_checkpoint(gain=2.0)  # ε > 0 and unequal copying bounds to reduce
    local, _ = certify_domain(weak, TASK, HEAD, here, range(23), progress=False)
    with embedded_ray():
        remote, _ = certify_domain(weak, TASK, HEAD, there, range(23), progress=False,
                                   runner=ray_runner(weak, TASK.name, HEAD, actors=2), unit=5)
    assert remote == local and 0 < local.max_eps and local.min_copy < local.mean_copy
    files = sorted(p.relative_to(here) for p in here.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(there) for p in there.rglob("*") if p.is_file())
    assert all((here / f).read_bytes() == (there / f).read_bytes() for f in files)
    assert check_domain(weak, there, progress=False) == local


def test_unsupported_models_are_refused() -> None:
    with pytest.raises(FarmError, match="attention-only"):
        InductionProver(Checkpoint.from_model(VerifiableGPT(GPTConfig(
            seq_len=8, attn_variant="softmax", norm_variant="none"))), TASK, HEAD)
    with pytest.raises(FarmError, match="norm"):
        InductionProver(Checkpoint.from_model(VerifiableGPT(GPTConfig(seq_len=8))), TASK, HEAD)
    with pytest.raises(FarmError, match="L2H0"):
        InductionProver(induction_checkpoint(), TASK, HeadRef(2, 0))


def test_command_line(checkpoint: Checkpoint, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ckpt"
    save_checkpoint(checkpoint, ckpt)
    out = tmp_path / "certs"
    assert main(["induction", "certify", "--checkpoint", str(ckpt), "--head", "L1H0",
                 "--out", str(out), "--prompts", "16"]) == 0
    assert "16/16 prompts certified for L1H0" in capsys.readouterr().out
    assert main(["check", str(out), "--checkpoint", str(ckpt)]) == 0
    assert "OK" in capsys.readouterr().out
    item = out / "items" / "3.cert"
    item.write_text(item.read_text().replace("\nweight-bound 7 4 1\n", "\nweight-bound 7 4 2\n"))
    assert main(["check", str(out), "--checkpoint", str(ckpt)]) == 1
    assert "weight-bound 7 4 is 2" in capsys.readouterr().out
    assert main(["induction", "heads", "--checkpoint", str(ckpt)]) == 0
    first = capsys.readouterr().out.splitlines()[1].split()
    assert first[0] == "L1H0" and float(first[2]) == 1.0
    png = tmp_path / "stripe.png"
    assert main(["induction", "plot", "--checkpoint", str(ckpt), "--head", "L1H0",
                 "--prompt", "1234", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("attention", ["sparsemax", "softmax"])
def test_a_trained_attention_only_model_certifies_and_checks(tmp_path: Path,
                                                            attention: str) -> None:
    """`farm train` trains the induction task (eight-way decisions against the best rival)
    and the checker re-derives certificates of a real model, whatever they conclude."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "certs"
    small = ["--task", "induction:vocab=4,period=3"]
    assert main(["train", "--tasks", small[1], "--norm", "none", "--mlp", "0", "--width", "16",
                 "--margin", "4", "--no-attn-bias", "--no-unembed-bias", "--attn", attention,
                 "--out", str(ckpt)]) == 0
    code = main(["induction", "certify", "--checkpoint", str(ckpt), *small, "--head", "L0H0",
                 "--out", str(out), "--prompts", "12"])
    assert code in (0, 1) and len(list((out / "items").iterdir())) == 12
    assert main(["check", str(out), "--checkpoint", str(ckpt)]) == 0
    slack = 0 if attention == "sparsemax" else Fraction(1, 10**9)  # stated ≈ true weights
    for item in (out / "items").iterdir():  # sound, and never below NFP's bound
        cert = parse(item.read_text())
        farm = {words[0]: words[1:] for words in cert.farm}
        negative, q = farm["direction"][1], cert.active[0]
        ours = next(Fraction(w[3]) for w in cert.farm if w[:3] == ("copy-lb", str(q), negative))
        effect = sum(cert.weight[q, k] * cert.val[k] for k in range(cert.seq))
        assert effect + slack >= ours >= logit_diff_bound(cert)


@pytest.mark.parametrize("pattern, replacement, complaint", [
    (r"^weight-bound 7 4 1$", "weight-bound 7 4 3/2", "weight-bound 7 4 is 3/2"),
    (r"^prev 7 4$", "prev 7 5", "prev 7 is 5"),
    (r"^margin (\S+)$", r"margin 4", "margin is 4"),
    (r"^(# farm copy-lb 7 \d+) 10$", r"\1 21/2", "copy-lb"),
])
def test_farm_check_re_derives_one_file_and_rejects_it_tampered(
        checkpoint: Checkpoint, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        pattern: str, replacement: str, complaint: str) -> None:
    ckpt, cert = tmp_path / "ckpt", tmp_path / "1234.cert"
    save_checkpoint(checkpoint, ckpt)
    cert.write_text(text)
    assert main(["check", str(cert), "--checkpoint", str(ckpt)]) == 0
    assert "OK" in capsys.readouterr().out
    cert.write_text(_swap(text, pattern, replacement))
    assert main(["check", str(cert), "--checkpoint", str(ckpt)]) == 1
    assert re.search(f"REJECTED .*{re.escape(complaint)}", capsys.readouterr().out)


def test_farm_check_of_an_induction_certificate_needs_the_checkpoint_and_nfp_syntax(
        checkpoint: Checkpoint, text: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, cert = tmp_path / "ckpt", tmp_path / "1234.cert"
    save_checkpoint(checkpoint, ckpt)
    cert.write_text(text)
    assert main(["check", str(cert)]) == 2
    assert "give --checkpoint" in capsys.readouterr().err
    cert.write_text(text.replace("\neps 0\n", "\neps 0.0\n"))
    assert main(["check", str(cert), "--checkpoint", str(ckpt)]) == 2
    assert "no decimals" in capsys.readouterr().err


def test_farm_check_of_a_signed_certificate_still_needs_its_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    envelope = tmp_path / "certificate.dsse.json"
    envelope.write_text("{}")
    assert main(["check", str(envelope)]) == 2
    assert "needs --pubkey" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.cert"), "--pubkey", str(envelope)]) == 2
