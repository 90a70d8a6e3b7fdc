#!/usr/bin/env bash
# Run a study's arms one after another, resumably: `make exp-006` and `make exp-007` call this.
#
#   experiments/run_arms.sh ROOT "COMMON OVERRIDES" "name:app override override ..." ...
#   (app: distill | prune | pipeline | quantize; no override contains a space)
#
# Each arm runs `distillab-<app> COMMON OVERRIDES hydra.run.dir=ROOT/name`. An arm with a
# results.json (a pipeline: pipeline.json) is finished and skipped; a distill arm with checkpoints/last.ckpt resumes from it
# (a prune arm resumes its finished removal steps, a pipeline arm its finished stages); the first
# failing arm stops the study with its exit status.
set -euo pipefail -o noglob  # noglob: list overrides such as x=[a,b] are not file patterns
root=$1 common=$2
shift 2
bin=${VENV:-.venv}/bin
# ARMS="name name ..." runs only those arms (e.g. a replicate on another machine), in the order of the arm arguments (not of ARMS).
for arm in "$@"; do
  name=${arm%%:*}
  [[ -n ${ARMS:-} && " $ARMS " != *" $name "* ]] && continue
  read -r app overrides <<<"${arm#*:}"
  dir=$root/$name
  [[ -f $dir/results.json || -f $dir/pipeline.json ]] && continue
  resume=""
  [[ $app == distill && -f $dir/checkpoints/last.ckpt ]] && resume=ckpt_path=last
  echo "arm $name ($app): $overrides $resume"
  # shellcheck disable=SC2086  # common and overrides are split into words by design
  "$bin/distillab-$app" $common $overrides "hydra.run.dir=$dir" $resume
done
