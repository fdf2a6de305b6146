#!/usr/bin/env bash
# Set up everything sdit needs on a fresh machine, idempotently:
#   - the Debian package dataset-fashion-mnist (Fashion-MNIST IDX files), when root or sudo allows;
#   - a virtual environment in .venv (or $SDIT_VENV) with the pinned stack of requirements.lock;
#   - with --dev, the pinned test tools of requirements-dev.lock and the Debian package chromium, the
#     browser the report's browser test drives through Playwright (Playwright cannot download one here);
#   - the C++ WKV kernel, compiled once into the environment ($venv/share/sdit/torch_extensions), so that
#     no command compiles it at first use (skipped with SDIT_WKV_EXT=0; a failed build only warns: sdit
#     then runs the slower tensor-op WKV loop).
# Usage: bash scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown option $arg (valid: --dev)" >&2; exit 2 ;;
  esac
done

# Debian packages: the Fashion-MNIST IDX files always, chromium with --dev; installed only when missing.
fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
debs=()
[ -f "$fmnist" ] || debs+=(dataset-fashion-mnist)
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null; then debs+=(chromium); fi
if [ "${#debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
  if [ "$sudo" != none ] && command -v apt-get >/dev/null; then
    echo "setup.sh: installing Debian packages ${debs[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${debs[@]}" >/dev/null
  else
    echo "setup.sh: warning: cannot install Debian packages ${debs[*]} here (needs apt-get as root):" \
         "without dataset-fashion-mnist pass --data-dir to commands that train;" \
         "without chromium the report's browser test is skipped" >&2
  fi
fi

venv="${SDIT_VENV:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch alone first, with its dependencies held to the lock: pip takes the CPU build where
# one lies on disk, and PyPI's CUDA build (with its nvidia-* wheels) on a GPU machine.
"${pip[@]}" -c requirements.lock "torch==$(sed -n 's/^torch==//p' requirements.lock)"
"${pip[@]}" --no-deps -r requirements.lock
if [ "$dev" = 1 ]; then
  "${pip[@]}" --no-deps -r requirements-dev.lock
fi
"${pip[@]}" --no-deps --no-build-isolation -e .
if [ "${SDIT_WKV_EXT:-}" != 0 ]; then
  "$venv/bin/python" -m sdit.build_ext >&2 || echo "setup.sh: warning: the C++ WKV kernel did not build (see above);" \
    "sdit runs the tensor-op WKV instead, and tries the build again at first use" >&2
fi
echo "setup.sh: ready: $venv ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
