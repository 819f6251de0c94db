#!/usr/bin/env bash
# Installs what building StyleForge needs on a fresh machine, into the project-local `.tools/` folder
# (git-ignored); touches nothing system-wide except the nightly's rust-src component.
#   .tools/bin/ptxas           from PyPI's nvidia-cuda-nvcc-cu12 wheel (PTX check, register report)
#   .tools/cuda/lib64/libcuda.so  from Debian's non-free libcuda1 (link-time only; the real driver is used on a GPU machine)
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin" "$tools/cuda/lib64" "$tools/dl"

if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  echo "[install-tools] rustup component add rust-src --toolchain nightly"
  rustup component add rust-src --toolchain nightly
fi

if [ ! -x "$tools/bin/ptxas" ]; then
  echo "[install-tools] ptxas from PyPI (nvidia-cuda-nvcc-cu12)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: nvidia-cuda-nvcc-cu12==12.9.86 -d "$tools/dl"
  whl=$(ls "$tools"/dl/nvidia_cuda_nvcc_cu12-*.whl | head -n1)
  python3 - "$whl" "$tools/bin/ptxas" <<'PY'
import sys, zipfile, shutil, os
whl, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z, z.open("nvidia/cuda_nvcc/bin/ptxas") as src, open(dst + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out)
os.chmod(dst + ".tmp", 0o755); os.replace(dst + ".tmp", dst)
PY
  rm -f "$tools"/dl/nvidia_cuda_nvcc_cu12-*.whl
fi

if [ ! -e "$tools/cuda/lib64/libcuda.so" ]; then
  echo "[install-tools] libcuda.so (link-time) from Debian non-free libcuda1"
  apt="$tools/dl/apt"; mkdir -p "$apt/lists/partial" "$apt/archives/partial"
  cat > "$apt/deb.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  opts=(-o "Dir::Etc::sourcelist=$apt/deb.sources" -o Dir::Etc::sourceparts=/nonexistent
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::Archives=$apt/archives" -o APT::Architecture=amd64)
  apt-get "${opts[@]}" update -qq
  (cd "$apt" && apt-get "${opts[@]}" download libcuda1 -qq)
  rm -rf "$apt/x"; dpkg -x "$apt"/libcuda1_*.deb "$apt/x"
  cp -a "$apt"/x/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so* "$tools/cuda/lib64/"
  [ -e "$tools/cuda/lib64/libcuda.so" ] || ln -sf libcuda.so.1 "$tools/cuda/lib64/libcuda.so"
  rm -rf "$apt"
fi
echo "[install-tools] ok: $("$tools/bin/ptxas" --version | tail -n1)"
