#!/usr/bin/env bash
# The target side of experiments/offline_bundle.py: a CUDA machine with python3 + PyTorch and no
# package index, this checkout as the working directory.
#
#   bash experiments/offline_setup.sh stash .gpu/pK   # once per part (each transfer): copy it aside
#   bash experiments/offline_setup.sh finish          # reassemble, install, de-quantize, unpack data
#   source /tmp/distillab_env.sh                      # then run as here, e.g.
#   python3 -m distillab.distill trainer=gpu logger=csv ...  |  VENV=/tmp experiments/run_arms.sh ...
#
# Everything lands under /tmp (BUNDLE_ROOT), outside the checkout: a transfer that replaces the
# checkout's ignored folders (the lent GPU machine's does) cannot take it away.
set -euo pipefail
root=${BUNDLE_ROOT:-/tmp}
stash=$root/bundle
case ${1:-} in
  stash)
    [[ -d ${2:-} ]] || { echo "error: stash: give a part folder (got '${2:-}')" >&2; exit 2; }
    mkdir -p "$stash" && cp "$2"/* "$stash"/
    echo "stashed $(ls "$2" | wc -l) files from $2 ($(du -sh "$stash" | cut -f1) in $stash)"
    ;;
  finish)
    cd "$stash"
    for first in *.chunk000; do  # NAME.chunk000, NAME.chunk001, ... -> NAME
      [[ -e $first ]] || continue
      name=${first%.chunk000}
      cat "$name".chunk* >"$name" && rm "$name".chunk*
    done
    cd - >/dev/null
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$root/site" "$stash"/*.whl >"$root/pip.log" 2>&1 \
      || { grep -v '^WARNING' "$root/pip.log" >&2; echo "error: pip could not install the bundle's wheels" >&2; exit 1; }
    mkdir -p "$root/data" "$root/bin" "$root/cache"
    [[ -f $stash/data.tar.xz ]] && tar xJf "$stash/data.tar.xz" -C "$root/data"
    cat >"$root/distillab_env.sh" <<EOF
export PYTHONPATH=$root/site:$PWD/src DISTILLAB_CACHE_DIR=$root/cache DISTILLAB_DATA_DIR=$root/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
EOF
    # shellcheck disable=SC1091
    source "$root/distillab_env.sh"
    for app in distill evaluate prune quantize pipeline generate report models; do  # run_arms.sh's VENV/bin
      module=distillab.$app
      [[ $app == models ]] && module=distillab.models.fetch
      printf '#!/bin/sh\nexec python3 -m %s "$@"\n' "$module" >"$root/bin/distillab-$app"
      chmod +x "$root/bin/distillab-$app"
    done
    for gguf in "$stash"/*.gguf; do  # de-quantize each model once, checked against its sha256
      [[ -e $gguf ]] || continue
      model=$(python3 -c "import sys; from distillab.models.fetch import OFFLINE_MODELS as M; \
print(next(k for k, e in M.items() if e.gguf_name == sys.argv[1]))" "$(basename "$gguf")")
      python3 -m distillab.models.fetch "$model" --gguf-file "$gguf" 2>&1 | tail -1
    done
    python3 -c "import torch, transformers, lm_eval, lightning, distillab.distill; \
print('ready: torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, \
'lm-eval', lm_eval.__version__, 'lightning', lightning.__version__)"
    ;;
  *)
    echo "error: give 'stash PART_FOLDER' or 'finish' (got '${1:-}')" >&2
    exit 2
    ;;
esac
