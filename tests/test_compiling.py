"""``speed.compile``: compiled and eager give the same numbers; what cannot compile runs eager."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import compose_config, tiny_overrides

from distillab import compiling
from distillab.compiling import compiled_models
from distillab.compiling import compiling as compiling_mode
from distillab.errors import DistillabError
from distillab.models.tiny import build_tiny
from distillab.objectives.chunked_ce import chunked_cross_entropy
from distillab.objectives.chunked_kd import chunked_soft_label_kd
from distillab.objectives.terms import hard_label_ce


def _kd_and_grad(mode: str, logits, hidden, head, mask):
    logits.grad = None
    with compiling_mode(mode):
        loss = chunked_soft_label_kd(logits, hidden, head, mask, 2.0, chunk_tokens=16)
    loss.backward()
    return loss.detach(), logits.grad.clone()


def test_the_compiled_kd_kernel_gives_the_eager_numbers():
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    hidden = torch.randn(2, 40, 16, generator=g)
    logits = torch.randn(2, 40, 300, generator=g, requires_grad=True)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False  # 70 rows: chunks of 16 and a last one of 6 (a second shape)
    eager = _kd_and_grad("false", logits, hidden, head, mask)
    compiled = _kd_and_grad("auto", logits, hidden, head, mask)
    assert float(compiled[0]) == pytest.approx(float(eager[0]), rel=1e-5)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-4, atol=1e-7)


def test_the_compiled_cross_entropy_gives_f_cross_entropys_numbers():
    """The chunked CE kernel (speed.compile=auto|true) against terms.hard_label_ce (eager)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 40, 300, generator=g).bfloat16().requires_grad_(True)
    targets = torch.randint(0, 300, (2, 40), generator=g)
    targets[0, -1] = -100  # an ignored target (masked out below) must not index the vocabulary
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[0, -1] = False
    mask[1, 33:] = False  # 72 rows: chunks of 16 and a last one of 8
    results = []
    for fn in (
        lambda: hard_label_ce(logits, targets, mask),
        lambda: chunked_cross_entropy(logits, targets, mask, chunk_tokens=16),
    ):
        logits.grad = None
        with compiling_mode("auto"):
            loss = fn()
        loss.backward()
        results.append((loss.item(), logits.grad.float().clone()))
    (eager, eager_grad), (compiled, compiled_grad) = results
    assert compiled == pytest.approx(eager, rel=1e-5)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-2, atol=1e-5)  # both rounded to bf16
    assert float(compiled_grad[1, 33:].abs().sum()) == 0.0  # masked rows get no gradient


def test_a_kernel_that_cannot_compile_says_so_once_and_runs_eager(monkeypatch, caplog):
    calls = []

    @compiling.kernel
    def double(x):
        calls.append(1)
        return 2 * x

    def broken_compile(fn, **kwargs):
        def fails(*args, **kw):
            raise RuntimeError("no C++ compiler found\nmore detail")

        return fails

    monkeypatch.setattr(compiling.torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="distillab.compiling"), compiling_mode("auto"):
        assert double(torch.ones(2)).tolist() == [2.0, 2.0]
        assert double(torch.ones(2)).tolist() == [2.0, 2.0]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["speed.compile: double runs eager; it could not be compiled (no C++ compiler found)"]
    assert len(calls) == 2  # eager each time, never retried compiled


def test_true_compiles_the_models_forward_for_the_block_only(monkeypatch, caplog):
    model, _ = build_tiny("llama")
    keys = list(model.state_dict())
    compiled: list = []

    def spy_compile(fn, **kwargs):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(compiling.torch, "compile", spy_compile)
    with compiled_models({"student": model, "teacher": None}, "auto"):
        assert "forward" not in model.__dict__  # auto: the models stay eager
    with compiled_models({"student": model, "teacher": None}, "true"):
        assert "forward" in model.__dict__ and len(compiled) == 1
        model(input_ids=torch.ones(1, 4, dtype=torch.long))
    assert "forward" not in model.__dict__ and list(model.state_dict()) == keys  # weights' names untouched

    def broken(fn, **kwargs):
        def fails(*args, **kw):
            raise RuntimeError("inductor: lowering failed")

        return fails

    monkeypatch.setattr(compiling.torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="distillab.compiling"):
        with compiled_models({"student": model}, "true"):
            out = model(input_ids=torch.ones(1, 4, dtype=torch.long)).logits
    assert out.shape[-1] == model.config.vocab_size
    assert [r.getMessage() for r in caplog.records] == [
        "speed.compile: the student's forward runs eager; it could not be compiled (inductor: lowering failed)"
    ]


def test_a_run_compiles_what_its_mode_says(tiny_corpus, tmp_path, monkeypatch):
    """The mode reaches the step inside Lightning's fit: auto compiles the KD kernel, not the models."""
    from distillab.distill import run
    from distillab.objectives import chunked_ce, chunked_kd

    compiled: list = []

    def spy_compile(fn, **kwargs):  # records what would be compiled, runs it eagerly (no inductor)
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return fn

    monkeypatch.setattr(compiling.torch, "compile", spy_compile)
    for kernel in (chunked_kd._forward_kl_value_and_grad, chunked_ce._cross_entropy_value_and_grad):
        monkeypatch.setattr(kernel, "compiled", None)  # not an earlier test's
    run(compose_config(tiny_overrides(tmp_path, tiny_corpus, "speed.compile=auto")))
    assert sorted(compiled) == ["_cross_entropy_value_and_grad", "_forward_kl_value_and_grad"]
    assert compiling.current() == "false"  # the run's mode ended with it


@pytest.mark.slow  # about a minute of inductor on 2 cores
def test_a_compiled_run_trains_to_the_eager_runs_numbers(tiny_corpus, tmp_path):
    """The whole step with the models compiled too (speed.compile=true) against eager."""
    from distillab.distill import run

    losses = {}
    for mode in ("false", "true"):
        cfg = compose_config(tiny_overrides(tmp_path / mode, tiny_corpus, f"speed.compile={mode}"))
        losses[mode] = run(cfg)["train_metrics"]
    for key in ("train/loss", "val/ppl"):
        assert losses["true"][key] == pytest.approx(losses["false"][key], rel=1e-4), key


def test_an_unknown_mode_is_refused():
    with pytest.raises(
        DistillabError, match=r"speed.compile: 'maybe' is not valid; valid: auto \| true \| false"
    ):
        with compiling_mode("maybe"):
            pass
    assert compiling.check_mode(True) == "true" and compiling.current() == "false"
