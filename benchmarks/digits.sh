#!/usr/bin/env bash
# The digits table of docs/benchmarks.md: kNN and linear top-1 of R18 backbones pretrained on
# the UCI digits (configs/pretrain/digits_r18.yaml), five methods x three seeds, then the table.
# Usage: bash benchmarks/digits.sh [OUT]   (finished runs are skipped, so it can be resumed;
# SEEDS="1 2" or METHODS="moco_v2" restrict it, e.g. to run seeds in parallel)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-output/digits_bench}
CFG=configs/pretrain/digits_r18.yaml
UNIMOCO=${UNIMOCO:-.venv/bin/unimoco}
QUIET=(LOG.PROGRESS off)
read -ra METHODS <<< "${METHODS:-moco_v2 unimoco_10pct unimoco_100pct moco_v2_co2}"
read -ra SEEDS <<< "${SEEDS:-0 1 2}"

method_opts() {
  case $1 in
    moco_v2) echo "LOSS.NAME infonce" ;;
    unimoco_10pct) echo "LOSS.NAME unicon DATA.LABEL_RATIO 0.1" ;;
    unimoco_100pct) echo "LOSS.NAME unicon DATA.LABEL_RATIO 1.0" ;;
    moco_v2_co2) echo "LOSS.NAME infonce CO2.ENABLED True" ;;
  esac
}

evaluate() {  # evaluate DIR SEED SOURCE...: kNN and the linear head (fast mode) into DIR
  local dir=$1 seed=$2
  shift 2
  for command in knn lincls; do
    [[ -f $dir/${command}_metrics.json ]] && continue
    "$UNIMOCO" "$command" "$@" --config-file "$CFG" "${QUIET[@]}" SEED "$seed" OUTPUT_DIR "$dir"
  done
}

for seed in "${SEEDS[@]}"; do
  evaluate "$OUT/random_init/seed$seed" "$seed" --random-init
  for method in "${METHODS[@]}"; do
    dir=$OUT/$method/seed$seed
    if [[ ! -f $dir/checkpoint_final.pth ]]; then
      # shellcheck disable=SC2046  # method_opts is a list of KEY VALUE words
      "$UNIMOCO" pretrain --config-file "$CFG" "${QUIET[@]}" $(method_opts "$method") \
        SEED "$seed" OUTPUT_DIR "$dir"
    fi
    evaluate "$dir" "$seed" --checkpoint "$dir/checkpoint_final.pth"
  done
done
.venv/bin/python benchmarks/digits_table.py "$OUT"
