#!/usr/bin/env bash
# The CO2 sweep of docs/benchmarks.md: MoCo v2 + CO2 on the Fashion-MNIST config for every
# alpha x tau_c, one benchmarks/fashion_mnist.sh run folder per setting (OUT/co2_a<alpha>_t<tau_c>),
# then the table against MoCo v2 without CO2 (OUT/moco_v2, run by this script too).
# Usage: bash benchmarks/fashion_mnist_co2_sweep.sh [OUT] [KEY VALUE ...]   (resumable;
# ALPHAS="0.1 1.0 10.0", TAUS="0.05 0.2 1.0" and SEEDS="0" by default, e.g. SEEDS="1 2" ALPHAS=0.1
# TAUS=1.0 for the best setting's other seeds)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-output/fashion_mnist_co2}
shift $(($# > 0 ? 1 : 0))
PY=${PY:-.venv/bin/python}
read -ra ALPHAS <<< "${ALPHAS:-0.1 1.0 10.0}"
read -ra TAUS <<< "${TAUS:-0.05 0.2 1.0}"
export SEEDS=${SEEDS:-0}
METHODS=moco_v2 bash benchmarks/fashion_mnist.sh "$OUT" "$@" > /dev/null
for alpha in "${ALPHAS[@]}"; do
  for tau in "${TAUS[@]}"; do
    METHODS=moco_v2_co2 PRETRAIN_OPTS="CO2.ALPHA $alpha CO2.T $tau ${PRETRAIN_OPTS:-}" \
      bash benchmarks/fashion_mnist.sh "$OUT/co2_a${alpha}_t${tau}" "$@" > /dev/null
  done
done
"$PY" benchmarks/fashion_mnist_co2_table.py "$OUT"
