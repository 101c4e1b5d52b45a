#!/usr/bin/env bash
# The one script to run on a lent GPU machine: GPU tests, kernel compile tests, then the speed
# benchmark, with every log and result under $OUT. Installs nothing and needs no network. Each
# stage has its own time limit and its exit status goes to $OUT/summary.txt, and a failing stage
# never stops the next one. The stage limits add up to 7 minutes 10 seconds.
#
#   OUT=/tmp/out benchmarks/gpu_check.sh        (PYTHON=... to choose the interpreter)
#
# Files written to $OUT: nvidia-smi.txt, env.txt, gpu_tests.log, bench.txt, bench.json,
# summary.txt.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:?set OUT to the folder for logs and results}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
cd "$REPO" || exit 1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-/tmp/mochapy-cupy-cache}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

# stage NAME SECONDS LOG COMMAND...: run with a time limit, append "NAME rc=N seconds=S" to summary.
stage() {
    local name="$1" limit="$2" log="$3"
    shift 3
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*" >> "$log"
    timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$SUMMARY"
}

stage nvidia-smi 15 "$OUT/nvidia-smi.txt" nvidia-smi
stage environment 30 "$OUT/env.txt" "$PYTHON" -c '
import platform, numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
for name in ("cupy", "torch", "jax", "h5py", "yaml", "click", "tqdm"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:
        print(name, "MISSING:", type(error).__name__, error)
import cupy
print("device", cupy.cuda.runtime.getDeviceProperties(0)["name"], "runtime",
      cupy.cuda.runtime.runtimeGetVersion(), "driver", cupy.cuda.runtime.driverGetVersion())
'
stage gpu-tests 140 "$OUT/gpu_tests.log" "$PYTHON" -m pytest -p no:cacheprovider -m gpu -q \
    -rs --durations=10 tests/test_gpu_kernels.py tests/test_gpu_layers.py tests/test_gpu_training.py
grep -Eq "[0-9]+ passed" "$OUT/gpu_tests.log" \
    || echo "gpu-tests: no test ran (all skipped: no usable CuPy or device?)" | tee -a "$SUMMARY"
stage compile-tests 45 "$OUT/gpu_tests.log" "$PYTHON" -m pytest -p no:cacheprovider -q \
    tests/test_kernels_compile.py
stage benchmark 200 "$OUT/bench.txt" "$PYTHON" benchmarks/iters_per_sec.py --backend gpu \
    --batch 100 --repeats 5 --seconds 1.5 --json "$OUT/bench.json"

echo "done; logs in $OUT" | tee -a "$SUMMARY"
