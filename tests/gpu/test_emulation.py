"""The CUDA emulation's self-test: kernels with deliberate bugs that it must catch (a missing
barrier, an out-of-bounds write, a wrong argument type, a host copy during a capture, divergent
barriers and shuffles, a dependence on block order, launch limits), and the behaviour correct
kernels rely on (shuffles, atomics, capture by value and replay). Runs wherever g++ does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.gpu.cuda_emu import CaptureError, EmulationError, GuardError


def kernel(emulator: Any, source: str, name: str) -> Any:
    module = emulator.cupy.RawModule(code=source, options=("-std=c++17",), name_expressions=[name])
    return module.get_function(name)


def nan_array(emulator: Any, n: int) -> Any:
    return emulator.cupy.full(n, np.nan, dtype=np.float32)


ROTATE = """
template <typename T>
__global__ void rotate(const T* x, T* y, int with_barrier) {
    __shared__ T tile[64];
    const int i = blockIdx.x * 64 + threadIdx.x;
    tile[threadIdx.x] = x[i];
    if (with_barrier) {
        __syncthreads();
    }
    y[i] = tile[(threadIdx.x + 1) % 64];
}
"""


def test_a_missing_barrier_reads_poisoned_shared_memory_in_every_order(cuda_emulator: Any):
    rotate = kernel(cuda_emulator, ROTATE, "rotate<float>")
    host = np.arange(256, dtype=np.float32)
    x = cuda_emulator.asarray(host)
    expected = np.roll(host.reshape(4, 64), -1, axis=1).ravel()
    for _ in range(3):  # natural, reversed and shuffled order, by turns
        y = nan_array(cuda_emulator, 256)
        rotate((4,), (64,), (x, y, np.int32(0)))
        assert np.isnan(y.get()).any()
        rotate((4,), (64,), (x, y, np.int32(1)))
        np.testing.assert_array_equal(y.get(), expected)


def test_writes_past_either_end_of_an_array_are_caught(cuda_emulator: Any):
    source = """
    __global__ void write_at(float* y, long long index) { y[index] = 1.0f; }
    """
    write_at = kernel(cuda_emulator, source, "write_at")
    y = nan_array(cuda_emulator, 10)
    write_at((1,), (1,), (y, np.int64(9)))
    with pytest.raises(GuardError, match="after the end"):
        write_at((1,), (1,), (y, np.int64(10)))
    with pytest.raises(GuardError, match="before the end"):
        write_at((1,), (1,), (y, np.int64(-1)))
    write_at((1,), (1,), (y, np.int64(0)))  # the guard zones are restored after a report


def test_arguments_are_marshalled_as_cupy_does_and_checked_against_the_signature(
    cuda_emulator: Any,
):
    source = """
    __global__ void scaled(int n, float scale, const double* x, double* y) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) { y[i] = scale * x[i]; }
    }
    """
    scaled = kernel(cuda_emulator, source, "scaled")
    x = cuda_emulator.asarray(np.arange(5.0))
    y = cuda_emulator.cupy.zeros(5, dtype=np.float64)
    with pytest.raises(EmulationError, match="int64 passed for a int32 .*Python int as int64"):
        scaled((1,), (32,), (5, np.float32(2), x, y))
    with pytest.raises(EmulationError, match="float64 passed for a float32"):
        scaled((1,), (32,), (np.int32(5), 2.0, x, y))
    with pytest.raises(EmulationError, match="array float32 passed for a pointer64 to float64"):
        scaled((1,), (32,), (np.int32(5), np.float32(2), x.astype(np.float32), y))
    with pytest.raises(EmulationError, match="3 arguments for 4"):
        scaled((1,), (32,), (np.int32(5), np.float32(2), x))
    with pytest.raises(TypeError, match="Unsupported type"):
        scaled((1,), (32,), (np.int32(5), np.float32(2), np.arange(5.0), y))
    scaled((1,), (32,), (np.int32(5), np.float32(2), x, y))
    np.testing.assert_array_equal(y.get(), 2 * np.arange(5.0))


def test_host_copies_syncs_allocations_and_compiles_inside_a_capture_are_refused(
    cuda_emulator: Any,
):
    cupy = cuda_emulator.cupy
    y = cupy.zeros(4, dtype=np.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    refused = {
        "ndarray.set": lambda: y.set(np.ones(4, dtype=np.float32), stream=stream),
        "ndarray.get": lambda: y.get(stream=stream),
        "Stream.synchronize": stream.synchronize,
        "shared pool": lambda: cupy.empty(4, dtype=np.float32),
        "RawModule": lambda: kernel(cuda_emulator, "__global__ void k() {}", "k"),
        "cupy.matmul": lambda: cupy.matmul(y[None], y[:, None]),
    }
    for what, operation in refused.items():
        with stream:
            stream.begin_capture()
            with pytest.raises(CaptureError, match=what):
                operation()
            with pytest.raises(CaptureError, match="Invalidated"):
                stream.end_capture()


def test_a_capture_records_launches_by_value_and_replays_them(cuda_emulator: Any):
    source = "__global__ void add(float* y, float value) { y[threadIdx.x] += value; }"
    add = kernel(cuda_emulator, source, "add")
    cupy = cuda_emulator.cupy
    y = cupy.zeros(8, dtype=np.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        value = np.float32(1.5)
        add((1,), (8,), (y, value), stream=stream)
        y *= 2  # CuPy's own operations on the stream are recorded too
        value = np.float32(100)  # noqa: F841 (the launch holds the value it was given)
        graph = stream.end_capture()
    np.testing.assert_array_equal(y.get(), 0)  # nothing ran during the capture
    graph.launch()
    graph.launch()
    np.testing.assert_array_equal(y.get(), (1.5 * 2 + 1.5) * 2)


def test_divergent_barriers_and_shuffles_with_exited_lanes_are_errors(cuda_emulator: Any):
    cases = {
        "exited while thread": "if (threadIdx.x < 16) { __syncthreads(); } y[threadIdx.x] = 1;",
        "divergent __syncthreads": (
            "if (threadIdx.x < 16) { __syncthreads(); } else { __syncthreads(); }"
        ),
        "has exited": (
            "if (threadIdx.x >= 16) { return; }"
            " y[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);"
        ),
        "divergent warp shuffles": (
            "float v = 1.0f; if (threadIdx.x < 16) { v = __shfl_down_sync(0xffffffffu, v, 1); }"
            " else { v = __shfl_down_sync(0xffffffffu, v, 2); } y[threadIdx.x] = v;"
        ),
        "cannot complete": (
            "if (threadIdx.x < 16) { y[0] = __shfl_down_sync(0xffffffffu, 1.0f, 1); }"
            " else { __syncthreads(); }"
        ),
    }
    y = cuda_emulator.cupy.zeros(64, dtype=np.float32)
    for index, (message, body) in enumerate(cases.items()):
        name = f"case{index}"
        broken = kernel(cuda_emulator, f"__global__ void {name}(float* y) {{ {body} }}", name)
        with pytest.raises(EmulationError, match=message):
            broken((1,), (64,), (y,))


def test_a_kernel_that_depends_on_block_order_gives_wrong_answers(cuda_emulator: Any):
    source = """
    __global__ void chain(float* y) {
        if (threadIdx.x == 0) { y[blockIdx.x] = blockIdx.x == 0 ? 1.0f : y[blockIdx.x - 1] + 1.0f; }
    }
    """
    chain = kernel(cuda_emulator, source, "chain")
    outcomes = []
    for _ in range(3):
        y = nan_array(cuda_emulator, 32)
        chain((32,), (32,), (y,))
        outcomes.append(np.array_equal(y.get(), np.arange(1, 33, dtype=np.float32)))
    assert outcomes.count(True) < 3


def test_launch_limits_and_launch_bounds(cuda_emulator: Any):
    source = "__global__ void __launch_bounds__(128) bounded(float* y) { y[threadIdx.x] = 1; }"
    bounded = kernel(cuda_emulator, source, "bounded")
    y = cuda_emulator.cupy.zeros(2048, dtype=np.float32)
    bounded((1,), (128,), (y,))
    with pytest.raises(EmulationError, match="more than 128"):
        bounded((1,), (256,), (y,))
    unbounded = kernel(cuda_emulator, "__global__ void free_(float* y) {}", "free_")
    for grid, block in (((1,), (2048,)), ((1, 70000), (1,)), ((1,), (1, 1, 128)), ((0,), (1,))):
        with pytest.raises(EmulationError):
            unbounded(grid, block, (y,))


def test_shuffles_and_atomics_compute_what_cuda_computes(cuda_emulator: Any):
    source = """
    __global__ void warp_sums(const float* x, float* sums, unsigned long long* count) {
        float v = x[blockIdx.x * blockDim.x + threadIdx.x];
        for (int offset = 16; offset > 0; offset >>= 1) {
            v += __shfl_down_sync(0xffffffffu, v, offset);
        }
        if ((threadIdx.x & 31) == 0) { sums[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = v; }
        atomicAdd(count, 1ull);
    }
    """
    warp_sums = kernel(cuda_emulator, source, "warp_sums")
    host = np.random.default_rng(0).integers(0, 100, size=(4, 128)).astype(np.float32)
    sums = nan_array(cuda_emulator, 16)
    count = cuda_emulator.cupy.zeros(1, dtype=np.uint64)
    warp_sums((4,), (128,), (cuda_emulator.asarray(host), sums, count))
    np.testing.assert_array_equal(sums.get(), host.reshape(16, 32).sum(axis=1))
    assert int(count.get()[0]) == 512


def test_host_arrays_mixed_into_device_operations_are_refused(cuda_emulator: Any):
    y = cuda_emulator.cupy.zeros(3, dtype=np.float32)
    with pytest.raises(TypeError, match="host NumPy array"):
        cuda_emulator.cupy.add(y, np.ones(3, dtype=np.float32))


def test_a_barrier_removed_from_the_projects_block_sum_is_caught(cuda_emulator: Any):
    """kernels/common.cuh's block_sum without the barrier that keeps a warp from overwriting
    warp_sums before the last call's readers are done: noise_level (three block sums in a row)
    must go wrong in some launch order, while the real source stays right in all of them."""
    from mochapy.backends.plan import expand_includes, kernel_dir

    source = expand_includes(kernel_dir() / "noise_level.cu")
    barrier = "    __syncthreads();  // warp_sums may still be read by a previous call\n"
    assert barrier in source
    images = np.random.default_rng(1).normal(size=(6, 1, 9, 40))
    cupy = cuda_emulator.cupy
    results = {}
    for label, code in (("real", source), ("mutant", source.replace(barrier, ""))):
        module = cupy.RawModule(code=code, options=("-std=c++17",),
                                name_expressions=["noise_level<double>"])
        noise_level = module.get_function("noise_level<double>")
        outputs = []
        for _ in range(3):
            out = cupy.full(6, np.nan, dtype=np.float64)
            noise_level((6,), (256,), (cuda_emulator.asarray(images), np.int32(6), np.int32(9),
                                       np.int32(40), 3.0, 1.0, 1e-5, np.int32(1), out))
            outputs.append(out.get())
        results[label] = outputs
    assert all(np.array_equal(out, results["real"][0]) for out in results["real"])
    assert not all(np.allclose(out, results["real"][0]) for out in results["mutant"])
