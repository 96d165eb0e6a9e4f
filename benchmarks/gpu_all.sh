#!/usr/bin/env bash
# Every GPU measurement of the open issues in one short call (issue 20; issue 18's sparse kernels), for a GPU
# machine lent for minutes: about 8 minutes in all, each step under its own time limit so that one slow step
# cannot eat the others' time. Writes one text file per step into $OUT (default results/gpu), each headed by the
# command that produced it.
#
#   bash benchmarks/gpu_all.sh            # from the repository root, on a machine with a CUDA device
#
# The package need not be installed there: it is imported from this checkout through a `sparsebench` link (the
# repository root is the package, pyproject.toml [tool.setuptools] package-dir). The kernel benchmarks need only
# torch, numpy, scipy, scikit-learn and pyyaml; gpu_packing.py also needs ray, optuna and mlflow and is skipped,
# with a line saying so, where they are missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
link="$(mktemp -d)"
ln -s "$PWD" "$link/sparsebench"
export PYTHONPATH="$link${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, its output in $OUT/NAME.txt
  local name="$1" limit="$2"
  shift 2
  { echo "\$ $*"; timeout "$limit" "$@" 2>&1; echo "exit $?"; } > "$OUT/$name.txt"
  tail -n 3 "$OUT/$name.txt"
}

step device 30 bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))'"
step method_epoch_time 150 "$PY" benchmarks/method_epoch_time.py --device cuda --methods dense,fixprob,set,set_neuron,spectral_sparse,dense_sparse --repeats 5
step lpsgd_step 90 "$PY" benchmarks/lpsgd_step.py --device cuda --arch mlp,wrn12 --repeats 30
step train_throughput 90 "$PY" benchmarks/train_throughput.py --device cuda --repeats 10
if "$PY" -c "import ray, optuna, mlflow" 2>/dev/null; then
  step gpu_packing 200 "$PY" benchmarks/gpu_packing.py --trials 16 --epochs 40 --hidden 1024,1024
else
  echo "gpu_packing: skipped, ray, optuna or mlflow is not importable on this machine" | tee "$OUT/gpu_packing.txt"
fi
rm -rf "$link"
