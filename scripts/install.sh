#!/usr/bin/env bash
# Install sparsebench (editable) and its dependencies into the active Python ($PYTHON, default python3).
#   bash scripts/install.sh          runtime dependencies
#   bash scripts/install.sh --test   plus pytest
# torch: an installed torch is left alone (a CUDA build stays). On a machine without an NVIDIA GPU, the CPU
# build is installed first (from PyTorch's CPU index when it is reachable), so that the package's
# `torch>=2.13` requirement is already met and pip never pulls the multi-gigabyte CUDA wheels.
set -euo pipefail
PY=${PYTHON:-python3}
TORCH_VERSION=${SPARSEBENCH_TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${SPARSEBENCH_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
cd "$(dirname "$0")/.."

extras=""
case "${1:-}" in
  --test) extras="[test]" ;;
  "") ;;
  *) echo "install.sh: unknown option '$1'; allowed: --test" >&2; exit 2 ;;
esac

pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

if "$PY" -c "import torch" 2>/dev/null; then
  echo "install.sh: torch $("$PY" -c 'import torch; print(torch.__version__)') is installed; leaving it alone"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "install.sh: NVIDIA GPU found; the default (CUDA) torch build comes with the requirements"
else
  host=$(printf '%s' "$TORCH_CPU_INDEX" | sed -E 's#^[a-z]+://([^/:]+).*#\1#')
  if "$PY" -c "import socket, sys; socket.getaddrinfo(sys.argv[1], 443)" "$host" 2>/dev/null; then
    echo "install.sh: no GPU; installing the CPU build of torch $TORCH_VERSION from $TORCH_CPU_INDEX"
    pip_install "torch==$TORCH_VERSION" --extra-index-url "$TORCH_CPU_INDEX"
  else
    # Offline mirrors and wheel caches (pip's find-links) may carry the CPU build under the same version.
    echo "install.sh: no GPU and $host unreachable; installing torch $TORCH_VERSION from the configured indexes"
    pip_install "torch==$TORCH_VERSION"
  fi
fi

pip_install -e ".$extras"
"$PY" -c "import sparsebench.methods, sparsebench.workflows, torch; print('install.sh: sparsebench ready (torch', torch.__version__ + ')')"
