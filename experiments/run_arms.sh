#!/usr/bin/env bash
# Run a study's arms one after another, resumably: `make exp-006` and `make exp-007` call this.
#
#   experiments/run_arms.sh ROOT STUDY [override ...]
#
# Each arm is one file, conf/experiment/STUDY/<arm>.yaml, whose `# app: <app>` line names the app
# (distill | prune | pipeline | quantize). Every arm runs
# `distillab-<app> experiment=STUDY/<arm> [override ...] hydra.run.dir=ROOT/<arm>`, in file-name order.
# An arm with a results.json (a pipeline: pipeline.json) is finished and skipped; a distill arm with
# checkpoints/last.ckpt resumes from it (a prune arm resumes its finished removal steps, a pipeline
# arm its finished stages); the first failing arm stops the study with its exit status.
# ARMS="name name ..." runs only those arms (e.g. a replicate on another machine).
set -euo pipefail -o noglob  # noglob: list overrides such as x=[a,b] are not file patterns
root=$1 study=$2
shift 2
bin=${VENV:-.venv}/bin
folder="$(dirname "$0")/../conf/experiment/$study"
[[ -d $folder ]] || { echo "error: study '$study': no folder conf/experiment/$study" >&2; exit 2; }
set +o noglob
arms=("$folder"/[!_]*.yaml)
set -o noglob
for file in "${arms[@]}"; do
  name=$(basename "$file" .yaml)
  [[ -n ${ARMS:-} && " $ARMS " != *" $name "* ]] && continue
  app=$(sed -n 's/^# app: *\([a-z]*\).*/\1/p' "$file" | head -1)
  [[ -n $app ]] || { echo "error: $file: no '# app: <app>' line (distill | prune | pipeline | quantize)" >&2; exit 2; }
  dir=$root/$name
  [[ -f $dir/results.json || -f $dir/pipeline.json ]] && continue
  resume=()
  [[ $app == distill && -f $dir/checkpoints/last.ckpt ]] && resume=(ckpt_path=last)
  echo "arm $name ($app): experiment=$study/$name $* ${resume[*]}"
  "$bin/distillab-$app" "experiment=$study/$name" "$@" "hydra.run.dir=$dir" "${resume[@]}"
done
