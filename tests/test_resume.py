"""Exact resume: kill -9 a tiny distillation at random points, resume from ``last.ckpt``, and get
bit-identical final student weights to an uninterrupted run (CPU, deterministic mode)."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny_overrides
from safetensors.torch import load_file

from distillab.data.resumable import EpochSeededSampler
from distillab.distill import run
from distillab.versions import library_versions

STEPS = 60
EXACT = [
    f"trainer.max_steps={STEPS}",
    f"trainer.val_check_interval={STEPS}",
    "trainer.deterministic=true",
    "callbacks.checkpoint.every_n_train_steps=1",
    "data.max_train_blocks=20",  # 10 batches per epoch: the run crosses 6 epoch boundaries
    "logger=csv",
]


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "student" / "model.safetensors")


def test_epoch_order_depends_only_on_seed_and_epoch_and_can_start_midway():
    sampler = EpochSeededSampler(10, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.skip = 4
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # the skip applies to one pass only
    sampler.set_epoch(3)
    assert list(sampler) != full and sorted(sampler) == list(range(10))


def test_a_loader_started_at_batch_b_reads_what_an_uninterrupted_loader_reads_after_b_batches():
    from torch.utils.data import TensorDataset

    from distillab.data.resumable import ResumableDataLoader

    data = TensorDataset(torch.arange(10))

    def stream(loader, epochs: int) -> list[list[int]]:
        out = []
        for epoch in range(epochs):  # as Lightning does: set_epoch at every epoch start
            loader.epoch_sampler.set_epoch(epoch)
            out += [batch[0].tolist() for batch in loader]
        return out

    whole = stream(ResumableDataLoader(data, batch_size=2, seed=5), 3)  # 5 batches per epoch
    for start in (3, 5, 7):  # inside the first epoch, on a boundary, inside the second
        later = ResumableDataLoader(data, batch_size=2, seed=5)
        later.start_at(start)
        assert stream(later, 2)[: 15 - start - 5] == whole[start : 15 - 5]


class CrashAtStep:
    """A Lightning callback that kills the run (an exception) before training step ``step``, and
    notes which training steps its CSV log holds on disk at that moment (``on_disk``): a kill -9,
    which runs no handler, would leave exactly those."""

    on_disk: list[int] = []

    def __new__(cls, step: int):
        import lightning as L
        from lightning.pytorch.loggers import CSVLogger

        class _Crash(L.Callback):
            def on_train_batch_start(self, trainer, *args):
                if trainer.global_step == step:
                    (csv_logger,) = (lg for lg in trainer.loggers if isinstance(lg, CSVLogger))
                    path = Path(csv_logger.log_dir) / "metrics.csv"
                    CrashAtStep.on_disk = logged_steps(path) if path.is_file() else []
                    raise RuntimeError(f"simulated crash before step {step}")

        return _Crash()


@pytest.mark.parametrize(
    "crash_step", [10, 13]
)  # on an epoch boundary (10 batches per epoch), and inside one
def test_resume_after_a_crash_at_a_given_step_gives_identical_weights(
    tmp_path, tiny_corpus, crash_step, caplog
):
    reference_dir = tmp_path / "uninterrupted"
    run(compose_config(tiny_overrides(reference_dir, tiny_corpus, *EXACT)))
    run_dir = tmp_path / "crashed"
    crash = f"+callbacks.crash={{_target_: test_resume.CrashAtStep, step: {crash_step}}}"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_config(tiny_overrides(run_dir, tiny_corpus, *EXACT, crash)))
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == crash_step
    # every logged training step is on disk as it happens (the Trainer saves the CSV after each row)
    assert CrashAtStep.on_disk and max(CrashAtStep.on_disk) == crash_step - 1, CrashAtStep.on_disk
    # train_seconds must count the segment before the crash too, not only the resumed one: say the
    # first segment took 1,000 s (the weights do not depend on it) and look for it after the resume.
    assert checkpoint["callbacks"]["Timer"]["time_elapsed"]["train"] > 0
    checkpoint["callbacks"]["Timer"]["time_elapsed"]["train"] = 1000.0
    # the checkpoint says which libraries wrote it; say it was an older torch: the resume warns
    assert checkpoint["distillab_versions"] == library_versions()
    checkpoint["distillab_versions"]["torch"] = "1.0"
    torch.save(checkpoint, last)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="distillab"):
        run(compose_config(tiny_overrides(run_dir, tiny_corpus, *EXACT, "ckpt_path=last")))
    resumed_wall = time.monotonic() - start
    assert f"other library versions (torch 1.0 -> {library_versions()['torch']})" in caplog.text
    train_seconds = json.loads((run_dir / "results.json").read_text())["train_seconds"]
    assert 1000.0 < train_seconds < 1000.0 + resumed_wall
    reference, again = weights(reference_dir), weights(run_dir)
    assert all(torch.equal(again[k], v) for k, v in reference.items())
    # Both segments' training logs survive (Lightning's CSV writer would delete the first).
    before, after = (logged_steps(run_dir / "csv" / name) for name in ("metrics.1.csv", "metrics.csv"))
    assert before and max(before) < crash_step <= min(after)


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_training_metrics(tmp_path, tiny_corpus):
    overrides = tiny_overrides(tmp_path, tiny_corpus, *EXACT, f"trainer.max_steps={STEPS // 6}")
    first = run(compose_config(overrides))
    trained = weights(tmp_path)
    assert first["train_metrics"]["train/loss"] > 0
    again = run(compose_config([*overrides, "ckpt_path=last"]))
    assert again["train_metrics"] == first["train_metrics"]  # not {}: nothing was logged this time
    assert again["train_tokens"] == first["train_tokens"]
    assert all(torch.equal(weights(tmp_path)[k], v) for k, v in trained.items())


def logged_steps(path) -> list[int]:
    with open(path) as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]


def test_kill_9_at_random_points_then_resume_gives_identical_weights(tmp_path, tiny_corpus):
    reference_dir = tmp_path / "uninterrupted"
    run(compose_config(tiny_overrides(reference_dir, tiny_corpus, *EXACT)))
    reference = weights(reference_dir)

    rng = random.Random(0)
    killed = 0
    for trial in range(3):
        run_dir = tmp_path / f"trial{trial}"
        command = [sys.executable, "-m", "distillab.distill", *tiny_overrides(run_dir, tiny_corpus, *EXACT)]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not (run_dir / "checkpoints" / "last.ckpt").exists() and proc.poll() is None:
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.8))
        proc.kill()  # SIGKILL: no handler runs, a checkpoint write may be cut short
        killed += proc.wait() == -9
        # the resume in process (the same code; a second interpreter would cost ~10 s per trial)
        run(compose_config(tiny_overrides(run_dir, tiny_corpus, *EXACT, "ckpt_path=last")))
        again = weights(run_dir)
        assert again.keys() == reference.keys()
        for name, tensor in reference.items():
            assert torch.equal(again[name], tensor), f"trial {trial}: {name} differs after resume"
    if not killed:
        pytest.fail("no trial was interrupted; lengthen the run")
