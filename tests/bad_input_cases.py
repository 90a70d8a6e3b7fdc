"""The bad-input catalogue as data: (app, overrides, what the one ``error:`` line must contain).

``test_bad_input_catalogue.py`` runs every case; ``distillab.docsgen.troubleshooting`` renders the
same list as the docs' troubleshooting page, so the page and the tests cannot disagree. ``{name}``
stands for a file the test fixture ``bad_files`` makes (an empty folder, a truncated checkpoint...).
"""

from __future__ import annotations

# (app, overrides, what the one line must contain)
CATALOGUE = [
    # paths and model specs
    (
        "distill",
        ["model.name_or_path=/no/such/model"],
        "model.name_or_path: folder '/no/such/model' does not exist",
    ),
    ("distill", ["model.dtype=float8"], "model.dtype: 'float8' is not one of"),
    ("distill", ["+model.revision=main"], "model: unknown keys ['revision']"),
    ("distill", ["model.name_or_path=tiny:gpt2"], "unknown tiny architecture 'gpt2'"),
    ("distill", ["model.name_or_path={empty_folder}"], "has no config.json"),
    (
        "distill",
        ["model.name_or_path={empty_folder}", "+model.gguf_file=model.gguf"],
        "model.gguf_file: 'model.gguf' not found",
    ),
    (
        "evaluate",
        ["model.name_or_path=/no/such/student"],
        "model.name_or_path: folder '/no/such/student' does not exist",
    ),
    ("distill", ["paths.data_dir=/no/such/data"], "/no/such/data"),
    # students, vocabularies, layer maps
    (
        "distill",
        ["student.remove=[0,9]", "student.num_remove=null"],
        "student.remove: layer 9 out of range for a 4-layer model",
    ),
    (
        "distill",
        ["student.remove=3", "student.num_remove=null"],
        "student.remove: 3 is not valid; expected a list of integers",
    ),
    ("distill", ["student.num_remove=4"], "student.num_remove"),
    ("distill", ["student._target_=distillab.training.students.Distil"], "student._target_: "),
    (
        "distill",
        ["+student.bogus=1"],
        "student: DropLayers.__init__() got an unexpected keyword argument 'bogus'",
    ),
    (
        "distill",
        ["model.name_or_path={vocab300}", "model@teacher=tiny_llama", "student=as_is"],
        "student: vocabulary size 300 differs from the teacher's",
    ),
    ("distill", ["objective=ild", "objective.terms.hidden.layer_map=diagonal"], "layer_map"),
    (
        "distill",
        [
            "objective=ild",
            "objective.terms.hidden.layer_map=explicit",
            "+objective.terms.hidden.pairs=[[0,9]]",
        ],
        "objective.terms.hidden: layer_map: pair (0, 9) out of range",
    ),
    # temperatures, weights, divergences, terms
    (
        "distill",
        ["objective.terms.kd.temperature=0"],
        "objective.terms.kd.temperature: 0 is not valid; expected a number > 0",
    ),
    ("distill", ["precision=fp8"], "precision: 'fp8' is not valid; expected one of auto, bf16, float32"),
    (
        "prune",
        ["allocator=jemalloc"],
        "allocator: 'jemalloc' is not valid; expected one of reuse, release, glibc",
    ),
    (
        "distill",
        ["precision=float32", "trainer.precision=bf16-mixed"],
        "trainer.precision: 'bf16-mixed' contradicts precision=float32",
    ),
    ("distill", ["student.score=ppl_drop"], "student.score: 'ppl_drop' is not a score for a student cut"),
    (
        "distill",
        ["objective.terms.kd.temperature=-1"],
        "objective.terms.kd.temperature: -1 is not valid; expected a number > 0",
    ),
    ("distill", ["objective.terms.kd.weight=-0.5"], "objective.terms.kd"),
    ("distill", ["objective.terms.kd.divergence=wasserstein"], "divergence"),
    ("distill", ["+objective.terms.magic={weight: 1.0}"], "objective.terms.magic: no _target_"),
    (
        "distill",
        ["+objective.terms.magic={_target_: distillab.objectives.terms.Magic}"],
        "objective.terms.magic._target_: ",
    ),
    (
        "distill",
        ["objective.terms.kd.weight=0", "objective.terms.ce.weight=0"],
        "objective.terms: every weight is 0",
    ),
    # data files
    ("distill", ["data.source.files=corpus/nope.jsonl"], "corpus/nope.jsonl"),
    ("distill", ["data.source.files=corpus/empty.jsonl"], "data.source: no non-empty documents"),
    ("distill", ["data.source.files=corpus/broken.jsonl"], "corpus/broken.jsonl"),
    ("distill", ["data.source.files=corpus/notext.jsonl"], "text"),
    ("distill", ["data.batch_size=0"], "data.batch_size: 0 is not valid; expected an integer >= 1"),
    ("distill", ["data.block_size=100000"], "data.block_size"),
    # evaluation
    ("distill", ["+eval.tasks.no_such_task.limit=2"], "no_such_task"),
    (
        "distill",
        ["+eval.tasks.arc_easy={limit: 2, primary: accuracy}"],
        "eval.tasks.arc_easy.primary: 'accuracy' is not a metric of arc_easy; valid: acc, acc_norm",
    ),
    ("evaluate", ["+eval.perplexity.x.source.files=corpus/nope.jsonl"], "corpus/nope.jsonl"),
    # conflicting options
    ("distill", ["objective=kd_cached"], "teacher_cache"),
    ("distill", ["ckpt_path=last"], "ckpt_path: 'last' but no checkpoint"),
    # pruning
    ("prune", ["prune.score=importance"], "prune.score"),
    ("prune", ["prune._target_=distillab.pruning.methods.Shrink"], "prune._target_: "),
    ("prune", ["prune.layers.num_remove=4"], "prune.layers.num_remove"),
    ("prune", ["prune.layers.schedule=sometimes"], "prune.layers.schedule: unknown 'sometimes'"),
    (
        "prune",
        ["prune=unstructured", "prune.score=wanda", "prune.unstructured.sparsity=1.0"],
        "prune.unstructured.sparsity",
    ),
    (
        "prune",
        ["prune=unstructured", "prune.score=wanda", "prune.unstructured.sparsity=-0.1"],
        "prune.unstructured.sparsity",
    ),
    (
        "prune",
        ["prune=unstructured", "prune.score=wanda", "prune.unstructured.pattern=3:4"],
        "prune.unstructured.pattern: unknown '3:4'",
    ),
    (
        "prune",
        ["prune=width", "prune.score=wanda", "prune.width.num_attention_heads=3"],
        "num_attention_heads",
    ),
    (
        "prune",
        ["prune=width", "prune.score=wanda", "prune.width.intermediate_size=100000"],
        "prune.width.intermediate_size",
    ),
    (
        "prune",
        ["prune=width", "prune.score=block_influence", "prune.width.intermediate_size=64"],
        "prune.score: 'block_influence' is not a score for prune=width (a layer score",
    ),
    # wrong types and ranges anywhere (config_schema.py, before any model loads)
    ("distill", ["export=maybe"], "export: 'maybe' is not valid; expected true or false"),
    ("prune", ["prune.layers.eval_each_step=yes"], "prune.layers.eval_each_step: 'yes' is not valid"),
    (
        "prune",
        ["prune=width", "prune.width.intermediate_size=wide"],
        "prune.width.intermediate_size: 'wide' is not valid",
    ),
    ("quantize", ["quantize=torchao", "quantize.group_size=abc"], "quantize.group_size: 'abc' is not valid"),
    ("quantize", ["speed.new_tokens=0"], "speed.new_tokens: 0 is not valid"),
    (
        "prune",
        ["prune.layers.num_remove=1", "heal.enabled=true", "objective@heal.objective=cross_kd"],
        "heal.objective: cached-teacher and cross-tokenizer terms are not supported for healing",
    ),
    # a group mounted under another key obeys the same rules there
    (
        "prune",
        ["heal.data.batch_size=four"],
        "heal.data.batch_size: 'four' is not valid; expected an integer >= 1",
    ),
    ("prune", ["heal.optimizer.lr=0"], "heal.optimizer.lr: 0 is not valid"),
    (
        "distill",
        ["objective=distill_lens", "objective.terms.lens.token_fraction=0"],
        "token_fraction: 0 is not valid",
    ),
    ("distill", ["scheduler.num_warmup_steps=-1"], "scheduler.num_warmup_steps: -1 is not valid"),
    (
        "distill",
        ["optimizer.lr=fast"],
        "optimizer.lr: 'fast' is not valid; expected a number > 0 (learning rate)",
    ),
    (
        "distill",
        [
            "trainer=fsdp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy.tensor_parallel_size=2",
        ],
        "trainer.strategy.tensor_parallel_size: 2 is not valid; expected an integer >= 1 and <= 1 (trainer=fsdp shards",
    ),
    (
        "distill",
        ["trainer.max_steps=0"],
        "trainer.max_steps: 0 is not valid; expected an integer >= 1 (training steps",
    ),
    ("distill", ["threads=0"], "threads: 0 is not valid; expected an integer >= 1 or null"),
    (
        "distill",
        ["eval=demo", "eval.tasks.gsm8k_bpb.limit=-5"],
        "eval.tasks.gsm8k_bpb.limit: -5 is not valid",
    ),
    (
        "distill",
        ["eval=demo", "eval.tasks.gsm8k_bpb.num_fewshot=two"],
        "eval.tasks.gsm8k_bpb.num_fewshot: 'two'",
    ),
    (
        "distill",
        ["data.val_fraction=1.0"],
        "data.val_fraction: 1.0 is not valid; expected a number >= 0 and < 1",
    ),
    ("distill", ["objective.terms.kd.weight=lots"], "objective.terms.kd.weight: 'lots' is not valid"),
    (
        "prune",
        ["prune.layers.num_remove=two"],
        "prune.layers.num_remove: 'two' is not valid; expected an integer >= 1",
    ),
    (
        "prune",
        ["prune=unstructured", "prune.score=wanda", "prune.unstructured.sparsity=nan"],
        "prune.unstructured.sparsity: nan",
    ),
    (
        "prune",
        ["prune.layers.contiguous=maybe"],
        "prune.layers.contiguous: 'maybe' is not valid; expected true or false",
    ),
    ("evaluate", ["eval=demo", "eval.batch_size=0"], "eval.batch_size: 0 is not valid"),
    ("quantize", ["threads=-2"], "threads: -2 is not valid"),
    ("prune", ["heal.enabled=true", "heal.trainer.max_steps=0"], "heal.trainer.max_steps: 0 is not valid"),
    (
        "distill",
        ["trainer.max_time=1h"],
        "trainer.max_time: '1h' is not valid; expected a string DD:HH:MM:SS, not zero, e.g. 00:01:00:00",
    ),
    ("distill", ["trainer.max_time=00:00:00:00"], "trainer.max_time: '00:00:00:00' is not valid"),
    (
        "prune",
        ["heal.enabled=true", "heal.trainer.max_time=3600"],
        "heal.trainer.max_time: 3600 is not valid",
    ),
    # Trainer arguments distillab passes itself (they would be overridden without a word)
    (
        "distill",
        ["+trainer.logger=false"],
        "trainer.logger: set by distillab, not from the config; the loggers come from the logger group",
    ),
    (
        "distill",
        ["+trainer.default_root_dir=/tmp/elsewhere"],
        "trainer.default_root_dir: set by distillab, not from the config; the run folder is paths.run_dir",
    ),
    (
        "prune",
        ["heal.enabled=true", "+heal.trainer.callbacks=[]"],
        "heal.trainer.callbacks: set by distillab, not from the config",
    ),
    (
        "prune",
        ["calibration.num_blocks=0"],
        "calibration.num_blocks: 0 is not valid; expected an integer >= 1",
    ),
    ("distill", ["data.block_size=1"], "data.block_size: 1 is not valid; expected an integer >= 2"),
    (
        "evaluate",
        ["eval=demo", "eval.tasks.arc_challenge_margin.num_fewshot=-1"],
        "eval.tasks.arc_challenge_margin.num_fewshot: -1 is not valid; expected an integer >= 0",
    ),
    # files and folders that are not what they claim
    (
        "distill",
        ["model.name_or_path={gguf_dir}", "+model.gguf_file=truncated.gguf"],
        "model.gguf_file: {gguf_dir}/truncated.gguf is not a complete GGUF file",
    ),
    (
        "distill",
        ["model.name_or_path={gguf_dir}", "+model.gguf_file=not_gguf.gguf"],
        "model.gguf_file: {gguf_dir}/not_gguf.gguf is not a GGUF file",
    ),
    (
        "evaluate",
        ["model.name_or_path={gguf_dir}", "+model.gguf_file=truncated.gguf"],
        "model.gguf_file: {gguf_dir}/truncated.gguf is not a complete GGUF file",
    ),
    (
        "distill",
        ["model.name_or_path={no_weights}"],
        "model.name_or_path: '{no_weights}' has config.json but no weights",
    ),
    (
        "distill",
        ["model.name_or_path={no_tokenizer}"],
        "model.name_or_path: '{no_tokenizer}' has no tokenizer",
    ),
    (
        "distill",
        ["model@teacher=tiny_llama", "teacher.name_or_path={no_tokenizer}"],
        "teacher.name_or_path: '{no_tokenizer}' has no tokenizer",
    ),
    ("distill", ["data.source.files=corpus/latin1.jsonl"], "latin1.jsonl:2: not UTF-8 text"),
    (
        "distill",
        ["data.source.format=text", "data.source.files=corpus/binary.bin"],
        "binary.bin: not UTF-8 text (byte 2)",
    ),
    ("distill", ["ckpt_path={corrupt_ckpt}"], "ckpt_path: {corrupt_ckpt} is not a readable checkpoint"),
    (
        "prune",
        ["prune.score=benchmark_drop", "prune.layers.num_remove=1", "prune.layers.removal.metric=accuracy"],
        "prune.layers.removal.metric: 'accuracy' is not a metric of arc_easy; valid: acc, acc_norm",
    ),
    (
        "prune",
        ["prune.score=benchmark_drop", "prune.layers.num_remove=1", "prune.layers.removal.task=mmlu"],
        "prune.layers.removal.task: 'mmlu' has no local task YAML",
    ),
    ("prune", ["prune.layers.removal.limit=0"], "prune.layers.removal.limit: 0 is not valid"),
    (
        "distill",
        ["speed.compile=maybe"],
        "speed.compile: 'maybe' is not valid; expected one of auto, true, false",
    ),
    (
        "prune",
        ["prune.layers.replace=linear", "prune.layers.num_remove=2"],
        "prune.layers.replace: linear replaces one contiguous block; set prune.score=angular",
    ),
    ("distill", ["tuning=lora", "tuning.rank=0"], "tuning.rank: 0 is not valid; expected an integer >= 1"),
    (
        "distill",
        ["tuning=lora", "quantize_aware=gguf"],
        "tuning: lora together with quantize_aware is not supported",
    ),
    (
        "prune",
        [
            "quantize_aware@heal.quantize_aware=gguf",
            "heal.quantize_aware.format=q4_2",
            "prune.layers.num_remove=2",
        ],
        "heal.quantize_aware.format: 'q4_2' is not valid; valid: q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | q2_k",
    ),
    (
        "distill",
        ["quantize_aware=gguf", "quantize_aware.refresh_every=4"],
        "quantize_aware.refresh_every: 4 applies to llama.cpp's K-quant mixes",
    ),
    (
        "distill",
        ["quantize_aware=gguf", "quantize_aware.refresh_every=0"],
        "quantize_aware.refresh_every: 0 is not valid; expected an integer >= 1",
    ),
    ("prune", ["heal.checkpoint_every=0"], "heal.checkpoint_every: 0 is not valid; expected an integer >= 1"),
    (
        "prune",
        ["prune=width", "prune.width.intermediate_size=64", "heal.enabled=true", "heal.checkpoint_every=50"],
        "heal.checkpoint_every: resumable healing is for layer cuts (prune=layers), not prune=width",
    ),
    (
        "evaluate",
        ["model.name_or_path={cut_weights}"],
        "model.name_or_path: {cut_weights}/model.safetensors is not a complete safetensors file",
    ),
    # options that contradict each other
    (
        "prune",
        ["prune.layers.contiguous=true", "prune.score=block_influence", "prune.layers.num_remove=2"],
        "prune.layers.contiguous: true needs prune.score=angular",
    ),
    (
        "prune",
        [
            "prune.score=angular",
            "prune.layers.contiguous=true",
            "prune.layers.num_remove=2",
            "prune.layers.protect=[1,2]",
        ],
        "prune.layers.protect: [1, 2] leaves no block of 2 contiguous layers",
    ),
    # a teacher with another tokenizer, on-policy
    (
        "distill",
        ["model@teacher=tiny_llama", "teacher.name_or_path=tiny:llama+sp", "student=as_is"],
        "student: vocabulary size 384 differs from the teacher's",
    ),
    (
        "distill",
        [
            "model@teacher=tiny_llama",
            "teacher.name_or_path=tiny:llama+sp",
            "student=as_is",
            "objective=cross_kd",
            "+objective.terms.hidden={_target_:distillab.objectives.hidden.HiddenStateAlignment,weight:0.5}",
        ],
        "objective.terms.hidden: HiddenStateAlignment compares teacher and student position by position",
    ),
    (
        "distill",
        ["objective=cross_kd", "objective.terms.cross_kd.loss=kl"],
        "objective.terms.cross_kd: loss: 'kl'",
    ),
    (
        "distill",
        ["on_policy.fraction=1.5"],
        "on_policy.fraction: 1.5 is not valid; expected a number >= 0 and <= 1",
    ),
    ("distill", ["objective=ce", "on_policy.fraction=0.5"], "on_policy.fraction: > 0 needs a teacher term"),
    (
        "distill",
        ["on_policy.fraction=0.5", "on_policy.prompt_tokens=32"],
        "on_policy.prompt_tokens: 32 leaves no room",
    ),
    # quantization
    ("quantize", ["quantize.gguf_type=q3_bogus"], "quantize.gguf_type: unknown 'q3_bogus'; valid: f32"),
    (
        "quantize",
        ["quantize=torchao", "quantize.bits=3"],
        "quantize.bits: 3 is not supported by the torchao backend; valid: 8, 4",
    ),
    (
        "quantize",
        ["quantize=torchao", "quantize.bits=4", "quantize.group_size=48"],
        "quantize.group_size",
    ),
    # pipeline
    ("pipeline", ["stages.prune.app=sparsify"], "stages.prune.app: unknown 'sparsify'"),
    ("pipeline", ["+stages.after={app: distill, overrides: []}"], "quantization must be the last stage"),
]
