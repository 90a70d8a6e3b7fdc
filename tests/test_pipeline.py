"""``distillab-pipeline`` on a tiny Llama: four stages, the per-stage table, caching, bad stage configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from distillab import pipeline
from distillab.config import CONFIG_DIR
from distillab.quantization import llama_cpp

TRAIN = [
    "data.source.files=corpus/tiny.jsonl",
    "data.block_size=32",
    "data.batch_size=2",
    "data.val_fraction=0.1",
    "data.max_val_blocks=1",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "eval_before_training=false",
]
CALIBRATE = [
    "calibration.data.source.files=corpus/tiny.jsonl",
    "calibration.data.block_size=32",
    "calibration.num_blocks=2",
    "calibration.batch_size=2",
    "heal.enabled=false",
]


def stage(name: str, app: str, *overrides: str) -> str:
    return f"stages.{name}={{app: {app}, overrides: [{', '.join(repr(o) for o in overrides)}]}}"


def pipeline_overrides(run_dir, data_dir, quant_type="q8_0", *extra):
    return [
        "model=tiny_llama",
        f"paths.run_dir={run_dir}",
        f"paths.data_dir={data_dir}",
        "eval=none",
        "+eval.perplexity.tiny.source.files=corpus/tiny.jsonl",
        "+eval.perplexity.tiny.block_size=32",
        "+eval.perplexity.tiny.max_tokens=256",
        "speed.new_tokens=4",
        "logger=csv",
        "threads=1",
        stage("distill", "distill", "student.num_remove=1", *TRAIN),
        stage("prune", "prune", "prune.layers.num_remove=1", *CALIBRATE),
        stage("heal", "distill", "student=as_is", "objective=ild", *TRAIN),
        stage("quantize", "quantize", f"quantize.gguf_type={quant_type}", "quantize.pre_tokenizer=default"),
        *extra,
    ]


def run_pipeline(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return pipeline.run(compose(config_name="pipeline", overrides=overrides))


def test_pipeline_table_and_cached_rerun(tmp_path, tiny_corpus, monkeypatch, caplog):
    results = run_pipeline(pipeline_overrides(tmp_path, tiny_corpus))
    rows = results["rows"]
    scored_in_llama_cpp = ["quantize (llama.cpp)"] if llama_cpp.is_available() else []  # auto: if installed
    assert [r["stage"] for r in rows] == [
        "teacher",
        "distill",
        "prune",
        "heal",
        "quantize",
        *scored_in_llama_cpp,
    ]
    params = [r["params"] for r in rows]
    assert params[0] > params[1] > params[2] == params[3] == params[4]  # 4 -> 3 -> 2 layers
    sizes = [r["bytes"] for r in rows[1:]]
    assert sizes[0] > sizes[1] == sizes[2] > sizes[3]  # q8_0 file smaller than the f32 folder
    assert rows[0]["mean_retention"] == pytest.approx(1.0)
    assert all(r["tokens_per_s"] > 0 and r["retention"]["tiny/ppl"] > 0 for r in rows)
    # every other stage is scored on the teacher's items: retention with a paired interval (quantize: the
    # GGUF de-quantized through transformers, evaluated like the others)
    assert rows[0]["retention_interval"] == {}  # the teacher is the reference: no interval to draw
    for r in rows[1:]:
        low, high = r["retention_interval"]["tiny/ppl"]
        assert low <= r["retention"]["tiny/ppl"] <= high and r["primary"] == ["tiny/ppl"]
    saved = json.loads((tmp_path / "pipeline.json").read_text())
    assert [r["stage"] for r in saved] == [r["stage"] for r in rows]
    # each row names where its per-item results are, so a report pairs stages on the same items
    assert rows[0]["run"] is None
    for r in rows[1:]:
        folder, _, model = r["run"].rpartition(":")
        assert (Path(folder) / "results.json").is_file() and model.startswith("student")
    from distillab.tracking import run_diff
    from distillab.tracking.compare import collect

    entries = {e.label.rpartition("/")[2]: e for e in collect([tmp_path])}
    paired = run_diff.compare_retention_mean([entries["heal"].run], [entries["quantize"].run])
    assert not isinstance(paired, str), paired
    assert "| quantize |" in (tmp_path / "pipeline.md").read_text()
    # the heal stage trained the pruned model against the original teacher, not against its input
    heal_dir = next(tmp_path.glob("03-heal-*"))
    heal_results = json.loads((heal_dir / "results.json").read_text())
    assert heal_results["params"]["teacher"] == rows[0]["params"]

    # the prune stage reports the layers it removed in the original teacher's numbering
    distilled = json.loads(next(tmp_path.glob("01-distill-*/student/config.json")).read_text())
    pruned = json.loads(next(tmp_path.glob("02-prune-*/results.json")).read_text())
    assert len(pruned["removed_teacher_layers"]) == 1
    assert set(pruned["removed_teacher_layers"]) | set(pruned["kept_teacher_layers"]) == set(
        distilled["distillab_teacher_layers"]
    )

    # re-running a finished pipeline does no work ...
    def must_not_run(cfg):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(pipeline, "app_run", lambda app: must_not_run)
    # (one stage pretends an older torch computed it: reused, and said so)
    distill_record = next(tmp_path.glob("01-distill-*/stage.json"))
    record = json.loads(distill_record.read_text())
    distill_record.write_text(json.dumps({**record, "versions": {**record["versions"], "torch": "1.0"}}))
    with caplog.at_level("WARNING", logger="distillab"):
        again = run_pipeline(pipeline_overrides(tmp_path, tiny_corpus))
    assert [r["bytes"] for r in again["rows"]] == [r["bytes"] for r in rows]
    assert "stage distill: reusing" in caplog.text and "torch 1.0 ->" in caplog.text
    assert "stage prune: reusing" not in caplog.text  # its versions match: no warning
    # ... and a changed stage re-runs only itself and what follows
    from distillab import quantize as quantize_app

    monkeypatch.setattr(
        pipeline, "app_run", lambda app: quantize_app.run if app == "quantize" else must_not_run
    )
    changed = run_pipeline(pipeline_overrides(tmp_path, tiny_corpus, "q4_0"))
    assert changed["rows"][-1]["bytes"] < rows[-1]["bytes"]
    assert len(list(tmp_path.glob("04-quantize-*"))) == 2  # the q8_0 stage is kept for reuse


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["stages.prune.app=sparsify"],
            "stages.prune.app: unknown 'sparsify'; valid: distill, prune, quantize",
        ),
        (["stages.heal.overrides=['objective=nonsense']"], "stages.heal.overrides:"),
        (
            [stage("quantize", "quantize", "quantize.gguf_type=q3_bogus")],
            "quantize.gguf_type: unknown 'q3_bogus'",
        ),
        (["+stages.after={app: distill, overrides: []}"], "stages.after: comes after quantize"),
        (
            [stage("heal", "distill", "model@teacher=tiny_qwen2")],
            "stages.heal.overrides: 'model@teacher=tiny_qwen2' sets the stage's model@teacher, which the pipeline wires",
        ),
        (
            [stage("prune", "prune", "model.dtype=bfloat16")],
            "stages.prune.overrides: 'model.dtype=bfloat16' sets",
        ),
        (
            [stage("heal", "distill", "speed.new_tokens=8")],
            "stages.heal.overrides: 'speed.new_tokens=8' sets speed, which the pipeline sets for every stage",
        ),
        (
            ["stages.distill=null", "stages.prune=null", "stages.heal=null", "stages.quantize=null"],
            "every stage is null",
        ),
        (
            ["reuse_stages_from=[/no/such/pipeline/run]"],
            "reuse_stages_from: /no/such/pipeline/run is not a directory",
        ),
    ],
)
def test_bad_stage_configs_fail_before_any_work(tmp_path, tiny_corpus, extra, message, capsys):
    """In process (the Hydra task function the CLI runs; a new interpreter costs ~10 s per case on
    2 cores): the real CLI is checked once, below."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=[*pipeline_overrides(tmp_path, tiny_corpus), *extra])
        with pytest.raises(SystemExit) as exit_info:
            pipeline.main.__wrapped__(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err[-2000:]
    assert not list(tmp_path.glob("0*"))  # no stage (not even the teacher's row) started


def test_the_pipeline_cli_prints_one_line_and_exits_2(tmp_path, tiny_corpus):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distillab.pipeline",
            *pipeline_overrides(tmp_path, tiny_corpus),
            "stages.prune.app=sparsify",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "stages.prune.app: unknown 'sparsify'" in lines[0], proc.stderr[-2000:]
    assert not list(tmp_path.glob("0*"))


def test_fingerprints_do_not_depend_on_where_things_live(tmp_path, tiny_corpus):
    """Same stages under two output directories: same fingerprints (the cache survives a move)."""
    from hydra import compose, initialize_config_dir

    from distillab.config import CONFIG_DIR

    plans = []
    for where in ("a", "b"):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="pipeline", overrides=pipeline_overrides(tmp_path / where, tiny_corpus))
            plans.append([s.fingerprint for s in pipeline.plan_stages(cfg, tmp_path / where)])
    assert plans[0] == plans[1] and len(set(plans[0])) == 4


def test_quantize_last_false_lets_a_stage_train_on_the_dequantized_gguf(tmp_path, tiny_corpus):
    """The ordering study's arm: quantize -> fine-tune (the de-quantized weights) -> quantize again."""
    overrides = [
        *pipeline_overrides(tmp_path, tiny_corpus),
        "quantize_last=false",
        "stages.distill=null",
        "stages.prune=null",
        "stages.heal=null",
        "stages.quantize=null",
        "+" + stage("q", "quantize", "quantize.gguf_type=q4_0", "quantize.pre_tokenizer=default"),
        "+" + stage("tune", "distill", "student=as_is", *TRAIN),
        "+" + stage("requant", "quantize", "quantize.gguf_type=q4_0", "quantize.pre_tokenizer=default"),
    ]
    rows = run_pipeline(overrides)["rows"]
    rows = [r for r in rows if not r["stage"].endswith("(llama.cpp)")]  # with the runtime: q, requant twice
    assert [r["stage"] for r in rows] == ["teacher", "q", "tune", "requant"]
    tune = json.loads(next(tmp_path.glob("02-tune-*/results.json")).read_text())
    assert tune["params"]["student"] == rows[0]["params"]
    assert rows[1]["bytes"] == rows[3]["bytes"]  # same architecture, same q4_0 layout


def test_reuse_stages_from_another_run(tmp_path, tiny_corpus, monkeypatch):
    """The ordering study's second arm reuses the first arm's finished distill stage, computes the rest."""
    first = run_pipeline(
        pipeline_overrides(tmp_path / "a", tiny_corpus, "q8_0", "stages.prune=null", "stages.heal=null")
    )
    ran: list[str] = []

    real_app_run = pipeline.app_run

    def record_and_run(app):
        def run(cfg):
            ran.append(app)
            return real_app_run(app)(cfg)

        return run

    monkeypatch.setattr(pipeline, "app_run", record_and_run)
    second = run_pipeline(
        pipeline_overrides(
            tmp_path / "b",
            tiny_corpus,
            "q4_0",
            "stages.prune=null",
            "stages.heal=null",
            f"reuse_stages_from=[{tmp_path / 'a'}]",
        )
    )
    assert ran == ["quantize"]  # the distill stage came from run a
    assert second["rows"][1] == first["rows"][1]
    assert not list((tmp_path / "b").glob("01-distill-*")) and list((tmp_path / "b").glob("02-quantize-*"))
    saved = (next((tmp_path / "b").glob("02-quantize-*")) / "stage_config.yaml").read_text()
    assert f"{tmp_path / 'a'}/01-distill-" in saved  # its input: run a's student


def test_the_quantize_first_experiment_composes(tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=["experiment=pipeline_quantize_first"])
        stages = pipeline.plan_stages(cfg, tmp_path)
    assert [s.name for s in stages] == ["distill", "prune", "quantize_first", "heal_quantized", "requantize"]
    # every stage reads its input from `model`; the healing stage trains it as is against the original
    assert stages[3].cfg.model.gguf_file == "model-q4_1.gguf"
    assert stages[3].cfg.student._target_.endswith("AsIs") and stages[3].cfg.teacher is not None
    assert stages[0].cfg.get("teacher") is None  # the first stage's input is the reference itself


def test_a_heal_stage_can_be_quantization_aware_before_quantize(tmp_path):
    """Item of the quantization guide: the heal stage's overrides select quantize_aware, the quantize
    stage writes the same format; stages without it stay float."""
    overrides = [
        'stages.heal.overrides=["student=as_is","objective=ild","quantize_aware=gguf","quantize_aware.format=q4_0"]',
        'stages.quantize.overrides=["quantize.gguf_type=q4_0"]',
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=overrides)
        stages = {s.name: s for s in pipeline.plan_stages(cfg, tmp_path)}
    assert stages["heal"].cfg.quantize_aware.format == "q4_0"
    assert stages["distill"].cfg.get("quantize_aware") is None
    assert stages["prune"].cfg.heal.get("quantize_aware") is None


def test_a_stage_sets_its_own_speed_compile(tmp_path):
    """How a stage trains is the stage's (the decode probe, the rest of ``speed``, is the table's)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="pipeline", overrides=['stages.heal.overrides=["student=as_is","speed.compile=true"]']
        )
        stages = {s.name: s for s in pipeline.plan_stages(cfg, tmp_path)}
    assert stages["heal"].cfg.speed.compile is True
    assert stages["distill"].cfg.speed.compile == "auto" and stages["prune"].cfg.speed.compile == "auto"


def test_a_quantize_stage_scored_in_llama_cpp_gets_its_own_row(tmp_path):
    """The same file scored in llama.cpp (quantize.score_in_llama_cpp) is a row of its own, with that
    runtime's metrics and per-item results, so the size x quality table and its intervals show both."""
    from distillab.pipeline import with_llama_cpp_score

    stage = tmp_path / "04-quantize-abc"
    (stage / "items" / "student").mkdir(parents=True)
    record = {"name": "quantize", "items_dir": str(stage / "items" / "student"), "metrics": {"t/acc": 0.5}}
    (stage / "results.json").write_text(json.dumps({"student": {"t/acc": 0.5}}))
    assert with_llama_cpp_score(record) == [record]  # scored in torch only
    (stage / "results.json").write_text(
        json.dumps({"student": {"t/acc": 0.5}, "student_llama_cpp": {"t/acc": 0.48}})
    )
    torch_row, llama_row = with_llama_cpp_score(record)
    assert torch_row is record
    assert llama_row["name"] == "quantize (llama.cpp)" and llama_row["scored_in"] == "llama.cpp"
    assert llama_row["metrics"] == {"t/acc": 0.48}
    assert llama_row["items_dir"] == str(stage / "items" / "student_llama_cpp")
    assert with_llama_cpp_score({"name": "teacher", "items_dir": None}) == [
        {"name": "teacher", "items_dir": None}
    ]


def test_a_distill_stage_that_stopped_after_training_resumes_from_its_checkpoint(
    tmp_path, tiny_corpus, monkeypatch, caplog
):
    """A stage killed (or crashed) after its training saved ``last.ckpt`` does not train again: the
    re-run resumes from the checkpoint and scores the same weights."""
    import lightning as L

    from distillab.stage_cache import STAGE_FILE

    overrides = pipeline_overrides(tmp_path, tiny_corpus, "q8_0", "stages.prune=null", "stages.heal=null", "stages.quantize=null")  # fmt: skip
    first = run_pipeline(overrides)
    (stage_dir,) = tmp_path.glob("01-distill-*")
    (stage_dir / STAGE_FILE).unlink()  # as if it stopped before writing its record
    fits = []
    original = L.Trainer.fit
    monkeypatch.setattr(
        L.Trainer, "fit", lambda self, *a, **k: fits.append(k.get("ckpt_path")) or original(self, *a, **k)
    )
    with caplog.at_level("INFO", logger="distillab"):
        second = run_pipeline(overrides)
    assert fits == ["last"] and "stage distill: resuming its training from" in caplog.text
    assert first["rows"][-1]["metrics"]  # scored: the comparison below is not of empty tables
    assert [r.get("metrics") for r in second["rows"]] == [r.get("metrics") for r in first["rows"]]
