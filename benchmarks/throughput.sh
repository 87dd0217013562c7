#!/usr/bin/env bash
# The GPU throughput table of docs/benchmarks.md: `unimoco bench` on one GPU for the
# CPU data path, the GPU data path, the GPU path with torch.compile (profiled for host syncs),
# the same with InfoNCE (what the label queue and UniCon cost) and without the non-finite-loss
# guard (what its host sync per step costs), then the table.
# Usage: bash benchmarks/throughput.sh [OUT] [KEY VALUE ...]   (finished variants are skipped)
# DATA_ROOT=/path/to/imagenet/train uses a real JPEG folder instead of generated shapes;
# VARIANTS="gpu_path gpu_compiled" restricts the list; TINY=1 runs CPU-sized settings (tests).
# Each variant has TIMEOUT seconds (default 300); one that fails or times out is reported in
# the table and the others still run. Several GPUs: LAUNCH="torchrun --nproc-per-node 8" (img/s
# are then totals; SOLVER.BATCH_SIZE is global, so add SOLVER.BATCH_SIZE 2048 to keep 256 per GPU
# and compare per-GPU img/s with a one-GPU run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-output/throughput}
shift $(($# > 0 ? 1 : 0))
# PYTHON: the interpreter that has unimoco installed (default .venv/bin/python, else python3).
if [[ -z ${PYTHON:-} ]]; then
  PYTHON=python3
  [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
read -ra LAUNCHER <<< "${LAUNCH:-$PYTHON}"
read -ra VARIANTS <<< "${VARIANTS:-cpu_path gpu_path gpu_compiled gpu_compiled_infonce gpu_compiled_noguard}"

if [[ ${TINY:-0} == 1 ]]; then
  STEPS=${STEPS:-3}
  COMMON=(MODEL.ARCH resnet18 INPUT.SIZE 32 SOLVER.BATCH_SIZE 8 MOCO.K 16 MOCO.BN_SPLITS 2
    DATA.NUM_WORKERS 0 BENCH.NUM_IMAGES 64 BENCH.IMAGE_SIZE 64 BENCH.WARMUP_STEPS 1)
else
  # ImageNet MoCo v2 training: R50, 224 px, batch 256, queue 65536, v2 augmentation, bf16.
  STEPS=${STEPS:-20}
  COMMON=(MODEL.ARCH resnet50 INPUT.SIZE 224 SOLVER.BATCH_SIZE 256 MOCO.K 65536 INPUT.AUG v2
    DATA.NUM_WORKERS 16 MODEL.CHANNELS_LAST True BENCH.NUM_IMAGES 8000 BENCH.IMAGE_SIZE 400
    BENCH.WARMUP_STEPS 5)
fi
COMMON+=(DATA.LABEL_RATIO 0.1)
[[ -n ${DATA_ROOT:-} ]] && COMMON+=(DATA.ROOT "$DATA_ROOT")

variant_opts() {
  case $1 in
    cpu_path) echo "DATA.PIPELINE cpu" ;;
    gpu_path) echo "DATA.PIPELINE gpu" ;;
    gpu_compiled) echo "DATA.PIPELINE gpu MODEL.COMPILE True" ;;
    gpu_compiled_infonce) echo "DATA.PIPELINE gpu MODEL.COMPILE True LOSS.NAME infonce" ;;
    gpu_compiled_noguard) echo "DATA.PIPELINE gpu MODEL.COMPILE True BENCH.STEP_GUARD False" ;;
    *) echo "unknown variant $1" >&2; return 1 ;;
  esac
}

mkdir -p "$OUT"
for variant in "${VARIANTS[@]}"; do
  [[ -f $OUT/$variant.json ]] && continue
  opts=$(variant_opts "$variant") || exit 2
  trace=()
  [[ $variant == gpu_compiled ]] && trace=(--trace "$OUT/$variant.trace.json")
  echo "== $variant" | tee "$OUT/$variant.log"
  # shellcheck disable=SC2086  # opts is a list of KEY VALUE words
  timeout "${TIMEOUT:-300}" "${LAUNCHER[@]}" -m unimoco.cli bench --steps "$STEPS" --out "$OUT/$variant.json" \
    "${trace[@]}" "${COMMON[@]}" $opts "$@" >> "$OUT/$variant.log" 2>&1
  status=$?
  echo "exit status $status" >> "$OUT/$variant.log"
  tail -n 8 "$OUT/$variant.log"
done
"$PYTHON" benchmarks/throughput_table.py "$OUT" "${VARIANTS[@]}" | tee "$OUT/table.md"
