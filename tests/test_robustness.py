"""Never lose work: a NaN loss stops with the term and step named, W&B failures fall back offline,
secrets never reach a logged config."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import compose_config, tiny_overrides
from wandb_files import finished_records

from distillab.distill import run
from distillab.redaction import redact
from distillab.training.distill_module import NonFiniteLoss


def test_a_nan_loss_stops_the_run_naming_term_and_step_and_keeps_the_last_checkpoint(tmp_path, tiny_corpus):
    overrides = tiny_overrides(
        tmp_path,
        tiny_corpus,
        "optimizer.lr=1e30",
        "trainer.gradient_clip_val=null",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "callbacks.checkpoint.every_n_train_steps=1",
        "logger=csv",
    )
    with pytest.raises(
        NonFiniteLoss,
        match=r"train/loss_kd = nan, train/loss_ce = nan at step [1-5]: training stopped; the last good checkpoint stays in",
    ) as err:
        run(compose_config(overrides))
    step = int(str(err.value).split(" at step ")[1].split(":")[0])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == step  # saved after the last finite step, before the NaN one
    assert not (tmp_path / "results.json").exists()


def test_wandb_that_cannot_go_online_falls_back_to_offline(tmp_path, tiny_corpus, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "10")
    with caplog.at_level(logging.WARNING):
        results = run(compose_config(tiny_overrides(tmp_path, tiny_corpus, "logger=wandb")))
    assert "train_metrics" in results
    warnings = [r.getMessage() for r in caplog.records if "W&B could not start online" in r.getMessage()]
    assert len(warnings) == 1
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_secret_keys_are_whole_key_parts_not_substrings():
    from distillab.redaction import is_secret_key

    assert all(is_secret_key(k) for k in ("hub_token", "+HF_TOKEN", "logger.wandb.api_key", "db_password"))
    assert not any(is_secret_key(k) for k in ("speed.new_tokens", "quantize.pre_tokenizer", "max_tokens"))


def test_secret_looking_keys_never_reach_a_logged_config():
    config = {
        "logger": {"wandb": {"api_key": "abc", "project": "p"}},
        "hub_token": "t",
        "lr": 1e-4,
        "stages": [{"PASSWORD": "x"}],
    }
    assert redact(config) == {
        "logger": {"wandb": {"api_key": "<redacted>", "project": "p"}},
        "hub_token": "<redacted>",
        "lr": 1e-4,
        "stages": [{"PASSWORD": "<redacted>"}],
    }


def test_a_secret_in_the_config_reaches_no_file_of_the_run(tmp_path, tiny_corpus):
    import subprocess
    import sys

    args = tiny_overrides(
        tmp_path, tiny_corpus, "logger=wandb", "+hub_token=hf_SECRET123", "+wandb_api_key=SECRET456"
    )
    out = subprocess.run(
        [sys.executable, "-m", "distillab.distill", *args, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "WANDB_MODE": "offline"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # the W&B log holds the run's config (with the redacted keys) once W&B has written all of it
    (log_file,) = (tmp_path / "wandb").glob("offline-run-*/*.wandb")
    records = finished_records(log_file)
    config = {
        i.key: i.value_json
        for r in records
        if r.WhichOneof("record_type") == "config"
        for i in r.config.update
    }
    assert "<redacted>" in config["hub_token"] and records[-1].WhichOneof("record_type") == "exit"
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and b"SECRET" in p.read_bytes()]
    assert leaked == []
    assert "hub_token=<redacted>" in (tmp_path / ".hydra" / "overrides.yaml").read_text()
