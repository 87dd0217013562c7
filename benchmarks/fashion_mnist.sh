#!/usr/bin/env bash
# The Fashion-MNIST table of docs/benchmarks.md: kNN (k 20 and 200) and linear top-1 of R18
# backbones pretrained on a 2,000-image subset (configs/pretrain/fashion_mnist_r18.yaml), for the
# random-init encoder, raw pixels, MoCo v2, UniMoCo at 10/30/60/100 % labels, CO2 on MoCo v2 and
# on UniMoCo 10 %, and cross-entropy training of the same network on every label; then the table.
# Usage: bash benchmarks/fashion_mnist.sh [OUT] [KEY VALUE ...]   (finished runs are skipped, so
# it can be resumed; SEEDS="1 2" or METHODS="moco_v2" restrict it, e.g. to run seeds in parallel;
# KEY VALUE pairs go to every command, e.g. DATA.ROOT /path/to/fashion-mnist; PRETRAIN_OPTS="K V .."
# to the pretraining runs only, e.g. "EVAL.KNN_PERIOD 1 EVAL.KNN_K 20" for a k 20 learning curve)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-output/fashion_mnist_bench}
shift $(($# > 0 ? 1 : 0))
CFG=configs/pretrain/fashion_mnist_r18.yaml
PY=${PY:-.venv/bin/python}
UNIMOCO=${UNIMOCO:-.venv/bin/unimoco}
OPTS=(LOG.PROGRESS off "$@")
ALL="raw_pixels random_init moco_v2 unimoco_10pct unimoco_30pct unimoco_60pct unimoco_100pct"
ALL+=" moco_v2_co2 unimoco_10pct_co2 supervised_ce"
read -ra METHODS <<< "${METHODS:-$ALL}"
read -ra SEEDS <<< "${SEEDS:-0 1 2}"
read -ra PRETRAIN_ONLY <<< "${PRETRAIN_OPTS:-}"
# The cross-entropy row's lr (backbone and head, SGD, cosine, batch 64): of 0.4, 0.1, 0.03 and
# 0.01 on seed 0 (docs/benchmarks.md) the best.
CE_LR=${CE_LR:-0.03}

pretrain_opts() {
  case $1 in
    moco_v2*) echo "LOSS.NAME infonce" ;;&
    unimoco_*) local pct=${1#unimoco_}; pct=${pct%%pct*}
      echo "LOSS.NAME unicon DATA.LABEL_RATIO $(awk "BEGIN{print $pct/100}")" ;;&
    *_co2) echo "CO2.ENABLED True" ;;
  esac
}

knn() {  # knn DIR SEED SOURCE...: kNN at k 200 and 20 into DIR and DIR/k20
  local dir=$1 seed=$2
  shift 2
  [[ -f $dir/knn_metrics.json ]] ||
    "$UNIMOCO" knn "$@" --config-file "$CFG" SEED "$seed" OUTPUT_DIR "$dir" "${OPTS[@]}"
  [[ -f $dir/k20/knn_metrics.json ]] ||
    "$UNIMOCO" knn "$@" --config-file "$CFG" SEED "$seed" OUTPUT_DIR "$dir/k20" EVAL.KNN_K 20 \
      "${OPTS[@]}"
}

evaluate() {  # evaluate DIR SEED SOURCE...: kNN at k 200 and 20, and the linear head, into DIR
  local dir=$1 seed=$2
  shift 2
  knn "$dir" "$seed" "$@"
  [[ -f $dir/lincls_metrics.json ]] ||
    "$UNIMOCO" lincls "$@" --config-file "$CFG" SEED "$seed" OUTPUT_DIR "$dir" "${OPTS[@]}"
}

for seed in "${SEEDS[@]}"; do
  for method in "${METHODS[@]}"; do
    dir=$OUT/$method/seed$seed
    case $method in
      raw_pixels)  # deterministic: one run serves every seed
        [[ -f $OUT/raw_pixels/metrics.json ]] ||
          "$PY" benchmarks/raw_pixels.py "$OUT/raw_pixels/metrics.json" --config-file "$CFG" "$@" ;;
      random_init) evaluate "$dir" "$seed" --random-init ;;
      supervised_ce)  # the whole network trained with cross-entropy on every label, as many
        # crops through it as the pretraining's query encoder sees (twice per epoch when symmetric)
        epochs=$("$PY" -c "import sys; from unimoco.pretrain.config import load_cfg
from unimoco.pretrain.config_checks import keys_per_image
cfg = load_cfg(sys.argv[1], sys.argv[2:])
print(cfg.SOLVER.EPOCHS * keys_per_image(cfg))" "$CFG" "$@")
        [[ -f $dir/semisup_metrics.json ]] ||
          "$UNIMOCO" semisup --random-init --config-file "$CFG" SEED "$seed" OUTPUT_DIR "$dir" \
            SEMISUP.LABEL_RATIO 1.0 SEMISUP.EPOCHS "$epochs" SEMISUP.BATCH_SIZE 64 \
            SEMISUP.BACKBONE_LR "$CE_LR" SEMISUP.HEAD_LR "$CE_LR" SEMISUP.WEIGHT_DECAY 0.0005 \
            SEMISUP.CROP_SCALE "(0.4, 1.0)" "${OPTS[@]}"
        knn "$dir" "$seed" --checkpoint "$dir/semisup_last.pth" ;;  # its backbone's kNN
      *)
        if [[ ! -f $dir/checkpoint_final.pth ]]; then
          # shellcheck disable=SC2046  # pretrain_opts is a list of KEY VALUE words
          "$UNIMOCO" pretrain --config-file "$CFG" $(pretrain_opts "$method") SEED "$seed" \
            OUTPUT_DIR "$dir" "${OPTS[@]}" "${PRETRAIN_ONLY[@]}"
        fi
        evaluate "$dir" "$seed" --checkpoint "$dir/checkpoint_final.pth" ;;
    esac
  done
done
"$PY" benchmarks/fashion_mnist_table.py "$OUT"
