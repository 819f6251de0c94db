#!/usr/bin/env bash
# One GPU-machine session of checks and timings, run from a bundle folder (`cargo xtask bundle`):
#   bash device-run.sh [OUTDIR]
# Needs only the bundle (release binary, PTX, shared/ copies) and the machine's python3 with PyTorch.
# Prints a short summary last; full logs go to OUTDIR (default ./out).
set -uo pipefail
cd "$(dirname "$0")"
out=${1:-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $*"; }
run() { local name=$1; shift; step "$name: $*"; ( "$@" ) 2>&1 | tee "$out/$name.log"; echo "[$name exit ${PIPESTATUS[0]}]"; }

run info ./styleforge info
run selfcheck ./styleforge self-check --fixtures shared/fixtures
if command -v compute-sanitizer >/dev/null; then
  run memcheck compute-sanitizer --tool memcheck --print-limit 20 ./styleforge self-check --seed 7 ${MEMCHECK_FILTER:+--filter $MEMCHECK_FILTER}
fi
run stylize ./styleforge stylize --model shared/fixtures/tnet_a.safetensors --input shared/images/amber.jpg --output "$out/amber-tnet.png" --device cuda
run bench_tnet ./styleforge bench --model transformer_net --sizes ${TNET_SIZES:-256,512,1024,2048} --batch 1,4
run bench_vit ./styleforge bench --model vit-nano,vit-small,vit-base,vit-large --sizes 256 --batch 1,8
run bench_vit16 ./styleforge bench --model vit-base --patch 16 --sizes 1024 --batch 1,8
run torch env MODES=${TORCH_MODES:-fp32,tf32,fp16cl} python3 shared/bench/torch_baseline.py
