"""Every kernel file compiles for Ampere and Hopper, and the GPU backend's plain-Python side (kernel
table, include expansion, launch geometry, split-K plan, cuBLAS argument mapping, solver segment
table) is right. Needs no GPU; the compile tests need nvcc, or NVRTC from PyPI (the `nvrtc` extra:
nvidia-cuda-nvrtc-cu12, the compiler CuPy itself calls), and skip cleanly without them."""

from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mochapy import neurons
from mochapy.backends import plan as launch
from mochapy.backends.interface import SolverStep
from mochapy.backends.plan import (
    KERNELS,
    cublas_gemm_args,
    elementwise_blocks,
    expand_includes,
    find_mapped_library,
    gemm_plan,
    gemm_shape,
    kernel_dir,
    name_expressions,
    reduction_blocks,
    segment_table,
)
from mochapy.params import Param, ParamSpec, Regularizer

KERNEL_DIR = kernel_dir()
ARCHES = ("sm_80", "sm_90")


def _source(name: str) -> str:
    return (KERNEL_DIR / name).read_text(encoding="utf-8")


def _cpp_constant(file_name: str, name: str) -> float:
    match = re.search(rf"\b{name}\s*=\s*([0-9.]+)", _source(file_name))
    assert match, f"{name} not found in {file_name}"
    return float(match.group(1))


def _cpp_enum(file_name: str, enum_name: str) -> list[str]:
    match = re.search(rf"enum {enum_name}\s*{{([^}}]*)}}", _source(file_name))
    assert match, f"enum {enum_name} not found in {file_name}"
    members = [item.split("=") for item in match.group(1).split(",") if item.strip()]
    return [name.strip() for name, value in sorted(members, key=lambda m: int(m[1]))]


# -- the kernel table ------------------------------------------------------------------------------
def test_every_kernel_file_is_in_the_table_and_every_template_kernel_too():
    assert set(KERNELS) == {path.name for path in KERNEL_DIR.glob("*.cu")}
    for file_name, expressions in KERNELS.items():
        declared = set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(\w+\)\s+)?(\w+)\(",
                                  expand_includes(KERNEL_DIR / file_name)))
        listed = {expression.split("<")[0] for expression in expressions}
        assert declared == listed, file_name


def test_name_expressions_instantiate_each_template_for_the_dtype():
    assert name_expressions("neurons.cu", "float32") == [
        "neuron_forward<float>", "neuron_backward<float>"
    ]
    gemm = name_expressions("gemm.cu", "float64")
    assert "gemm_tiled<double, true, false>" in gemm
    assert "gemm_sum_splits<double>" in gemm
    assert len(gemm) == 5


def test_expand_includes_inlines_each_header_once(tmp_path: Path):
    (tmp_path / "base.cuh").write_text("#pragma once\nint base;\n")
    (tmp_path / "mid.cuh").write_text('#include "base.cuh"\nint mid;\n')
    (tmp_path / "k.cu").write_text('#include "mid.cuh"\n#include "base.cuh"\nint k;\n')
    text = expand_includes(tmp_path / "k.cu")
    assert "#include" not in text
    assert text.count("int base;") == 1
    assert text.index("int base;") < text.index("int mid;") < text.index("int k;")


def test_python_constants_match_the_kernels():
    assert _cpp_constant("common.cuh", "kBlock") == launch.BLOCK
    assert _cpp_constant("gemm.cu", "kTileM") == launch.GEMM_TILE_M
    assert _cpp_constant("gemm.cu", "kTileN") == launch.GEMM_TILE_N
    assert _cpp_constant("gemm.cu", "kTileK") == launch.GEMM_TILE_K
    assert _cpp_constant("gemm.cu", "kGemmThreads") == launch.GEMM_THREADS
    assert _cpp_constant("bias.cu", "kColumnTile") == launch.COLUMN_TILE
    assert _cpp_constant("bias.cu", "kRowSlices") == launch.ROW_SLICES
    assert neurons.Exponential().parameter == neurons.EXP_INPUT_CAP  # the kernels take the cap
    assert _cpp_enum("elementwise.cu", "ElementWiseOp") == [
        f"k{op}" for op in launch.ELEMENTWISE_OPS
    ]
    methods = sorted(launch.SOLVER_METHODS, key=launch.SOLVER_METHODS.get)
    assert _cpp_enum("solver_update.cu", "SolverMethod") == ["kSGD", "kNesterov", "kAdam"]
    assert methods == ["sgd", "nesterov", "adam"]
    codes = {cls.code: f"k{name}" for name, cls in neurons.NEURONS.items()}
    assert _cpp_enum("neuron_math.cuh", "NeuronCode") == [codes[c] for c in sorted(codes)]


# -- compilation ----------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("file_name", sorted(KERNELS))
def test_kernel_file_compiles_for_ampere_and_hopper(file_name: str, tmp_path: Path):
    """What NVRTC gets (includes inlined) plus every listed instantiation, built by nvcc for both
    architectures with warnings as errors."""
    taken = ",\n".join(
        f"    (const void*)&{expression}"
        for dtype in ("float32", "float64")
        for expression in name_expressions(file_name, dtype)
    )
    unit = tmp_path / file_name
    unit.write_text(
        expand_includes(KERNEL_DIR / file_name)
        + f"\nextern const void* const instantiated_kernels[] = {{\n{taken}\n}};\n"
    )
    gencode = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHES]
    result = subprocess.run(
        ["nvcc", *gencode, *launch.COMPILE_OPTIONS, "--Werror", "all-warnings",
         "-c", "-o", str(tmp_path / "unit.o"), str(unit)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _load_nvrtc() -> ctypes.CDLL | None:
    """libnvrtc from the nvidia-cuda-nvrtc wheel, if installed."""
    try:
        import nvidia.cuda_nvrtc
    except ImportError:
        return None
    for folder in nvidia.cuda_nvrtc.__path__:
        for library in sorted((Path(folder) / "lib").glob("libnvrtc.so.*")):
            return ctypes.CDLL(str(library))
    return None


NVRTC = _load_nvrtc()


def nvrtc_compile(source: str, name: str, options: list[str], expressions: list[str]
                  ) -> tuple[int, str, dict[str, str]]:
    """(status, log, lowered name of each expression), as CuPy's RawModule compiles a module."""
    program = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), 0,
                                    None, None) == 0
    try:
        for expression in expressions:
            assert NVRTC.nvrtcAddNameExpression(program, expression.encode()) == 0
        encoded = (ctypes.c_char_p * len(options))(*[option.encode() for option in options])
        status = NVRTC.nvrtcCompileProgram(program, len(options), encoded)
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value + 1)
        NVRTC.nvrtcGetProgramLog(program, log)
        lowered = {}
        for expression in expressions if status == 0 else ():
            name_out = ctypes.c_char_p()
            NVRTC.nvrtcGetLoweredName(program, expression.encode(), ctypes.byref(name_out))
            lowered[expression] = (name_out.value or b"").decode()
        return status, log.value.decode(errors="replace"), lowered
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(program))


needs_nvrtc = pytest.mark.skipif(
    NVRTC is None, reason="NVRTC is not installed (pip install -e '.[nvrtc]')"
)


@needs_nvrtc
@pytest.mark.parametrize("file_name", sorted(KERNELS))
def test_kernel_file_compiles_with_nvrtc_as_cupy_compiles_it(file_name: str):
    """The source the backend hands RawModule, its options and name expressions, through NVRTC
    for both architectures: no error, no warning, a lowered name for every kernel."""
    expressions = name_expressions(file_name, "float32") + name_expressions(file_name, "float64")
    source = expand_includes(KERNEL_DIR / file_name)
    for arch in ARCHES:
        options = [*launch.COMPILE_OPTIONS, f"--gpu-architecture={arch}"]
        status, log, lowered = nvrtc_compile(source, file_name, options, expressions)
        assert status == 0, f"{file_name} for {arch}:\n{log[-4000:]}"
        assert "warning" not in log, f"{file_name} for {arch}:\n{log[-4000:]}"
        assert all(name.startswith("_Z") for name in lowered.values()), lowered


@needs_nvrtc
def test_nvrtc_check_reports_a_broken_kernel():
    status, log, _ = nvrtc_compile(
        "template <typename T> __global__ void k(T* x) { x[0] = undeclared; }", "broken.cu",
        ["--gpu-architecture=sm_90"], ["k<float>"],
    )
    assert status != 0 and "undeclared" in log


# -- launch geometry -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 255, 256, 257, 476_100, 10**9])
def test_elementwise_grid_covers_small_arrays_and_caps_at_a_full_gpu(n: int):
    blocks = elementwise_blocks(n, sm_count=132)
    assert 1 <= blocks <= 8 * 132
    assert blocks == min(math.ceil(n / launch.BLOCK), 8 * 132)


@pytest.mark.parametrize("n", [1, 800, 476_100, 10**9])
def test_reduction_grid_fits_its_workspace(n: int):
    blocks = reduction_blocks(n)
    assert 1 <= blocks <= launch.MAX_REDUCTION_BLOCKS
    assert blocks * launch.BLOCK * launch.REDUCTION_ITEMS_PER_THREAD >= min(
        n, launch.MAX_REDUCTION_BLOCKS * launch.BLOCK * 8
    )


@pytest.mark.parametrize(
    "m, n, k",
    [(100, 128, 4761), (100, 4761, 128), (4761, 128, 100), (128, 4761, 100), (100, 128, 8),
     (1, 1, 1), (100, 8, 128), (3, 5, 1000)],
)
def test_gemm_plan_tiles_the_output_and_slices_k_without_gaps(m: int, n: int, k: int):
    plan = gemm_plan(m, n, k, sm_count=132)
    cols, rows, splits = plan.grid
    assert cols * launch.GEMM_TILE_N >= n and rows * launch.GEMM_TILE_M >= m
    assert plan.k_chunk % launch.GEMM_TILE_K == 0
    assert splits * plan.k_chunk >= k > (splits - 1) * plan.k_chunk  # no empty slice
    assert splits == 1 or plan.k_chunk >= 4 * launch.GEMM_TILE_K


def test_gemm_plan_splits_the_long_thin_products_and_not_the_wide_ones():
    assert gemm_plan(100, 128, 4761, sm_count=132).splits > 16
    assert gemm_plan(4761, 128, 100, sm_count=132).splits == 1


def test_gemm_shape_reads_transposes_and_rejects_mismatches():
    assert gemm_shape((100, 4761), (4761, 128), (100, 128), False, False) == (100, 128, 4761)
    assert gemm_shape((100, 4761), (100, 128), (4761, 128), True, False) == (4761, 128, 100)
    assert gemm_shape((100, 128), (4761, 128), (100, 4761), False, True) == (100, 4761, 128)
    with pytest.raises(ValueError, match="do not fit"):
        gemm_shape((100, 4761), (128, 4761), (100, 128), False, False)
    with pytest.raises(ValueError, match="2-D"):
        gemm_shape((100,), (100, 3), (1, 3), True, False)


def _column_major_gemm(op_x, op_y, rows, cols, inner, x, ld_x, y, ld_y, out, ld_out):
    """What cuBLAS's gemm computes, on flat buffers read and written column-major."""

    def matrix(buffer, op, r, c, ld):  # the operand op(M) of shape (r, c)
        stored = (c, r) if op else (r, c)
        view = np.lib.stride_tricks.as_strided(
            buffer, stored, (buffer.itemsize, ld * buffer.itemsize)
        )
        return view.T if op else view

    product = matrix(x, op_x, rows, inner, ld_x) @ matrix(y, op_y, inner, cols, ld_y)
    np.lib.stride_tricks.as_strided(out, (rows, cols), (out.itemsize, ld_out * out.itemsize))[
        ...
    ] = product


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_cublas_arguments_compute_the_row_major_product(trans_a: bool, trans_b: bool):
    rng = np.random.default_rng(0)
    m, n, k = 5, 3, 4
    a = rng.normal(size=(k, m) if trans_a else (m, k))
    b = rng.normal(size=(n, k) if trans_b else (k, n))
    out = np.full((m, n), np.nan)
    op_b, op_a, rows, cols, inner, ld_b, ld_a, ld_out = cublas_gemm_args(m, n, k, trans_a, trans_b)
    _column_major_gemm(op_b, op_a, rows, cols, inner, b.ravel(), ld_b, a.ravel(), ld_a,
                       out.ravel(), ld_out)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_find_mapped_library_picks_cublas_not_cublaslt():
    maps = "\n".join([
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/libcublasLt.so.13.0.1",
        "7f02-7f03 r--p 00000000 08:01 2",
        "7f04-7f05 r-xp 00000000 08:01 3 /opt/site/nvidia/cu13/lib/libcublas.so.13",
    ])
    assert find_mapped_library(maps, "libcublas.so") == "/opt/site/nvidia/cu13/lib/libcublas.so.13"
    assert find_mapped_library(maps, "libcudnn.so") is None


# -- the solver's segment table --------------------------------------------------------------------
def _params(*specs: tuple[str, int, ParamSpec]) -> list[Param]:
    params, offset = [], 0
    for key, size, spec in specs:
        param = Param(key, (size,), spec)
        param.offset = offset
        offset += size
        params.append(param)
    return params


def test_segment_table_merges_equal_neighbours_and_folds_regu_coef_in():
    l2 = ParamSpec(regularizer=Regularizer("L2", 2.0))
    bias = ParamSpec(regularizer=Regularizer("none"), lr_mult=2.0)
    l1 = ParamSpec(regularizer=Regularizer("L1", 0.5))
    params = _params(("a.weight", 6, l2), ("a.bias", 2, bias), ("b.weight", 4, l2),
                     ("c.weight", 3, l2), ("c.bias", 1, bias), ("d.weight", 2, l1))
    bounds, coefficients = segment_table(reversed(params), regu_coef=1e-4)
    np.testing.assert_array_equal(bounds, [0, 6, 8, 15, 16, 18])
    np.testing.assert_allclose(coefficients, [
        [1.0, 2e-4, 0.0], [2.0, 0.0, 0.0], [1.0, 2e-4, 0.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.5e-4],
    ])
    assert bounds.dtype == np.int64 and coefficients.dtype == np.float64


def test_segment_table_rejects_a_gap_in_the_buffer():
    params = _params(("a", 3, ParamSpec()), ("b", 2, ParamSpec()))
    params[1].offset = 4
    with pytest.raises(ValueError, match="starts at 4, expected 3"):
        segment_table(params, 0.0)


# -- every launch's arguments against the kernel's C++ signature ---------------------------------
class FakeArray:
    """Stands in for a CuPy array: shape, dtype and a device pointer, nothing computed."""

    def __init__(self, shape: tuple[int, ...] | int, dtype: object) -> None:
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        self.data = SimpleNamespace(ptr=0x1000)
        self.flags = SimpleNamespace(c_contiguous=True)

    def __getitem__(self, index: object) -> FakeArray:
        return FakeArray(np.empty(self.shape)[index].shape, self.dtype)

    def set(self, host: np.ndarray, stream: object = None) -> None:
        assert host.dtype == self.dtype and host.shape == self.shape


FAKE_CUPY = SimpleNamespace(
    zeros=lambda shape, dtype=np.float64: FakeArray(shape, dtype),
    empty=lambda shape, dtype=np.float64: FakeArray(shape, dtype),
    asarray=lambda host: FakeArray(np.asarray(host).shape, np.asarray(host).dtype),
    cuda=SimpleNamespace(Device=lambda: SimpleNamespace(attributes={"MultiProcessorCount": 132})),
)
POINTER_TYPES = {"long long": np.int64, "double": np.float64, "unsigned long long": np.uint64,
                 "mocha::acc_t": np.float64}
SCALAR_TYPES = {"int": np.int32, "long long": np.int64}


def kernel_parameters(file_name: str, kernel: str) -> list[str]:
    """The parameter types of a kernel, e.g. ['int', 'T', 'const T*', 'long long']."""
    source = expand_includes(KERNEL_DIR / file_name)
    pattern = rf"__global__\s+void\s+(?:__launch_bounds__\(\w+\)\s+)?{kernel}\((.*?)\)\s*{{"
    match = re.search(pattern, source, re.DOTALL)
    assert match, kernel
    return [" ".join(p.split()[:-1]).replace(" *", "*") for p in match.group(1).split(",")]


def check_argument(parameter: str, argument: object, dtype: np.dtype, where: str) -> None:
    if parameter.endswith("*"):
        element = parameter.removeprefix("const ").removesuffix("*").strip()
        assert argument is None or isinstance(argument, FakeArray), where
        if isinstance(argument, FakeArray):
            expected = dtype if element == "T" else np.dtype(POINTER_TYPES[element])
            assert argument.dtype == expected, f"{where}: {argument.dtype} for {parameter}"
    else:
        expected = dtype if parameter == "T" else np.dtype(SCALAR_TYPES[parameter])
        assert isinstance(argument, np.generic) and argument.dtype == expected, (
            f"{where}: {argument!r} for {parameter}"
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_launch_passes_what_the_kernel_signature_takes(dtype: str):
    from mochapy.backends.gpu_kernels import KernelLibrary
    from mochapy.neurons import ReLU

    library = KernelLibrary(FAKE_CUPY, np.dtype(dtype), stream=None)
    launches: list[tuple] = []
    library._launch = lambda *launch: launches.append(launch)  # record instead of running

    def a(*shape: int) -> FakeArray:
        return FakeArray(shape, dtype)

    x, loss = a(100, 37), a(1)
    kernels = library
    kernels.neuron_forward(1, 0.0, 0.0, x, x)
    kernels.neuron_backward(1, 0.0, x, x, x, x)
    kernels.bias_neuron_forward(ReLU(0.05), x, a(37), x)
    kernels.neuron_backward_column_sum(ReLU(), x, x, x, x, a(37))
    kernels.elementwise_forward("Divide", x, x, x)
    kernels.elementwise_backward("Multiply", x, x, x, x, None, x)
    kernels.power_forward(x, 2.0, 0.5, 1.5, x, x)
    kernels.power_backward(x, 2.0, 1.5, x, x)
    kernels.gaussian_recon_loss(x, x, x, 0.01, 0.5, 0.0, loss, x, None)
    kernels.gaussian_kl_loss(x, x, 0.01, loss, None, x)
    kernels.square_loss(x, x, 0.01, loss, x, x)
    kernels.philox_normal(x, kernels.random_state(7))
    kernels.gather_rows(a(500, 37), FakeArray(100, np.int64), x)
    kernels.noise_level(a(100, 1, 69, 69), 3.0, 1.13, 1e-6, 2, a(100, 1))
    kernels.accumulate_losses(FakeArray(2, np.uint64), FakeArray(2, np.float64))
    kernels.gemm_tiled(a(100, 4761), a(4761, 128), a(100, 128), 100, 128, 4761, False, False)
    kernels.gemm_tiled(a(4761, 100), a(100, 128), a(4761, 128), 4761, 128, 100, True, False)
    kernels.gemm_tiled(a(100, 4761), a(128, 4761), a(100, 128), 100, 128, 4761, False, True)
    kernels.gemm_tiled(a(9, 7), a(5, 9), a(7, 5), 7, 5, 9, True, True)
    step = SolverStep(lr=1e-3, momentum=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8, t=1)
    for method, states in (("adam", 2), ("sgd", 1)):
        kernels.solver_update(method, a(8), a(8), [a(8) for _ in range(states)],
                              FakeArray(3, np.int64), FakeArray((2, 3), np.float64), step)

    launched = {expression for _, expression, *_ in launches}
    assert launched == {e for expressions in KERNELS.values() for e in expressions}
    for file_name, expression, grid, block, args in launches:
        name = expression.split("<")[0]
        parameters = kernel_parameters(file_name, name)
        where = f"{file_name}:{name}"
        assert len(args) == len(parameters), f"{where}: {len(args)} arguments"
        for parameter, argument in zip(parameters, args, strict=True):
            check_argument(parameter, argument, np.dtype(dtype), where)
        assert all(g >= 1 for g in grid) and len(grid) <= 3, where
        if "reduce_to_scalar" in _source(file_name) or "block_sum" in _source(file_name):
            assert block == (launch.BLOCK,), where
