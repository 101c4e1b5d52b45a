#!/usr/bin/env bash
# The one script to run on a lent GPU machine: every test marked gpu, on the real device; the kernel
# compile tests (nvcc and NVRTC); then the speed benchmark at batch 100 (mochapy gpu eager and graph,
# PyTorch eager, torch.compile, JAX jit, the GEMM ceiling) and its batch sweep, with every log and
# result under $OUT. Installs nothing and needs no network. Each stage has its own time limit and
# its exit status goes to $OUT/summary.txt; a failing stage never stops the next one. The stage
# limits add up to 9 minutes 45 seconds (one 10-minute device command).
#
#   OUT=/tmp/out benchmarks/gpu_check.sh        (PYTHON=... to choose the interpreter)
#
# Files written to $OUT: nvidia-smi.txt, env.txt, gpu_tests.log, compile_tests.log, bench.txt,
# bench.json, sweep.txt, sweep.json, summary.txt. tests/gpu/test_check_script.py runs this script
# with stand-in commands and checks every command line it runs (files exist, flags parse).
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
export CUDA_EMU=off  # the GPU tests skip instead of falling back to the CPU emulation
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
for name in ("cupy", "torch", "jax", "h5py", "yaml", "click", "tqdm", "nvidia.cuda_nvrtc"):
    try:
        module = __import__(name, fromlist=["_"])
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:
        print(name, "MISSING:", type(error).__name__, error)
import cupy
print("device", cupy.cuda.runtime.getDeviceProperties(0)["name"], "runtime",
      cupy.cuda.runtime.runtimeGetVersion(), "driver", cupy.cuda.runtime.driverGetVersion())
'
stage gpu-tests 150 "$OUT/gpu_tests.log" "$PYTHON" -m pytest -p no:cacheprovider -m gpu -q \
    -rs --durations=10 tests
grep -Eq "[0-9]+ passed" "$OUT/gpu_tests.log" \
    || echo "gpu-tests: no test ran (all skipped: no usable CuPy or device?)" | tee -a "$SUMMARY"
stage compile-tests 60 "$OUT/compile_tests.log" "$PYTHON" -m pytest -p no:cacheprovider -q -rs \
    tests/gpu/test_kernels_compile.py
stage benchmark 150 "$OUT/bench.txt" "$PYTHON" benchmarks/iters_per_sec.py --backend gpu \
    --batch 100 --repeats 3 --seconds 1.0 --json "$OUT/bench.json" --force
stage sweep 180 "$OUT/sweep.txt" "$PYTHON" benchmarks/iters_per_sec.py --backend gpu --sweep \
    --repeats 2 --seconds 0.5 --json "$OUT/sweep.json" --force

echo "done; logs in $OUT" | tee -a "$SUMMARY"
