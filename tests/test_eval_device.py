"""A GPU run evaluates on the GPU: ``app_run.on_run_device`` moves a model that sits on the CPU (the
teacher as loaded, the student as Lightning hands it back) to the run's CUDA device for the
evaluation and back afterwards, also when the evaluation fails; a CPU run, or an app that does not
train (evaluate, quantize), moves nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from distillab import app_run
from distillab.precision import Precision


class RecordingModel(torch.nn.Module):
    """A module whose ``to`` records the device asked for instead of moving (no GPU in CI)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.moves: list[str] = []

    def to(self, device, *args, **kwargs):
        self.moves.append(str(device))
        return self


def _run_on(monkeypatch, device_type: str, cuda: bool, train: str | None = "bf16-mixed") -> None:
    run = dataclasses.replace(Precision(), device_type=device_type, train=train)
    monkeypatch.setattr(app_run, "current_precision", lambda: run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_a_gpu_run_evaluates_a_cpu_model_on_the_gpu_and_returns_it(monkeypatch):
    _run_on(monkeypatch, "cuda", cuda=True)
    model = RecordingModel()
    with pytest.raises(RuntimeError), app_run.on_run_device(model):
        assert model.moves == ["cuda:0"]
        raise RuntimeError("the evaluation failed")
    assert model.moves == ["cuda:0", "cpu"]


@pytest.mark.parametrize(
    ("device_type", "cuda", "train"),
    [("cpu", True, "32-true"), ("cuda", False, "bf16-mixed"), ("cuda", True, None)],
    ids=["cpu-run", "no-cuda", "app-without-trainer"],
)
def test_a_cpu_run_a_machine_without_cuda_or_an_app_that_does_not_train_moves_nothing(
    monkeypatch, device_type, cuda, train
):
    _run_on(monkeypatch, device_type, cuda, train)
    model = RecordingModel()
    with app_run.on_run_device(model):
        pass
    assert model.moves == []
