#!/usr/bin/env bash
# One GPU-machine session of checks and timings, run from a bundle folder (`cargo xtask bundle`):
#   bash device-run.sh [OUTDIR]
# Needs only the bundle (release binary, PTX, shared/ copies) and the machine's python3 with PyTorch.
# Everything goes to stdout and OUTDIR/device.log; the stylized sample images to OUTDIR.
# Environment: TNET_SIZES (TransformerNet bench sizes), MEMCHECK_FILTER / MEMCHECK_S (compute-sanitizer),
# TORCH_MODES (PyTorch eager modes), TORCH_COMPILE=0 skips the torch.compile baseline (1024 b1, <= 6 min).
set -uo pipefail
cd "$(dirname "$0")"
out=${1:-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$out/device.log") 2>&1
run() { echo; echo "=== $*"; "$@"; echo "[exit $?]"; }

run cat ptxas-report.txt
run nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv
run ./styleforge info
run ./styleforge self-check --fixtures shared/fixtures --images shared/images
# The fast (fp16) TransformerNet on real photographs: PSNR against the fp32 net, and against PyTorch.
run ./styleforge self-check --filter psnr --fixtures shared/fixtures --images shared/images
if command -v compute-sanitizer >/dev/null; then
  # Default: every check under memcheck; MEMCHECK_FILTER="a b" limits it to those ops (new kernels).
  for f in ${MEMCHECK_FILTER:-ALL}; do
    [ "$f" = ALL ] && f=""
    run timeout ${MEMCHECK_S:-180} compute-sanitizer --tool memcheck --print-limit 20 ./styleforge self-check --seed 7 ${f:+--filter $f}
  done
fi
run ./styleforge stylize --model shared/fixtures/tnet_a.safetensors --input shared/images/amber.jpg --output "$out/amber-tnet.png" --device cuda --precision fp16
run ./styleforge stylize --model shared/fixtures/tnet_a.safetensors --input shared/images/amber.jpg --output "$out/amber-tnet-fp32.png" --device cuda --precision fp32
run ./styleforge stylize --model shared/fixtures/vit_nano.safetensors --style shared/images/mosaic.jpg --input shared/images/amber.jpg --output "$out/amber-vit.png" --device cuda
run ./styleforge bench --model transformer_net --precision fp16,fp32 --sizes ${TNET_SIZES:-256,512,1024,2048} --batch 1,4
run ./styleforge bench --model vit-nano,vit-small,vit-base,vit-large --sizes 256 --batch 1,8
run ./styleforge bench --model vit-base --patch 16 --sizes 1024 --batch 1,8
run ./styleforge bench --model transformer_net --precision fp16,fp32 --sizes 256,1024 --batch 1 --no-graph
run ./styleforge bench --model transformer_net --precision fp16,fp32 --sizes 1024 --batch 1 --layers
run ./styleforge bench --model vit-base --patch 16 --sizes 1024 --batch 8 --layers
run env MODES=${TORCH_MODES:-fp32,tf32,fp16cl} python3 shared/bench/torch_baseline.py
if [ "${TORCH_COMPILE:-1}" = 1 ]; then
  # torch.compile (max-autotune) of TransformerNet at 1024 b1 only: autotuning takes minutes; capped at 6.
  run timeout 360 env SIZES=1024 SKIP_VIT=1 MODES=compile python3 shared/bench/torch_baseline.py
fi
