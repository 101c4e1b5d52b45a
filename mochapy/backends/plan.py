"""Launch planning in plain Python (no CuPy, no GPU, no compiler), shared by every backend.

Where the kernel sources live (kernels/*.cu and kernels/cpu/*.c), the solver's segment table and
method codes (every backend's solver update reads them), and for the GPU: how includes are inlined
for NVRTC, the template instantiations each file provides, launch geometry, the split-K plan of
the tiled GEMM and the cuBLAS argument mapping for row-major arrays. Everything here is
unit-tested on machines without a GPU; `gpu_kernels.py` and `cpu_kernels.py` turn it into calls.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Threads per block of every kernel that reduces (kernels/common.cuh: mocha::kBlock).
BLOCK = 256
# Upper bound on the blocks of a reduction: the size of its per-block partial-sum workspace.
MAX_REDUCTION_BLOCKS = 1024
# Elements each thread of a reduction handles, about: enough work to hide the final pass.
REDUCTION_ITEMS_PER_THREAD = 8
# Tiled GEMM geometry (kernels/gemm.cu) and the bias column sums' block (kernels/bias.cu).
GEMM_TILE_M = 64
GEMM_TILE_N = 64
GEMM_TILE_K = 16
GEMM_THREADS = 256
COLUMN_TILE = 32
ROW_SLICES = 8

COMPILE_OPTIONS = ("-std=c++17",)
CTYPES = {"float32": "float", "float64": "double"}

_GEMM_VARIANTS = tuple(
    f"gemm_tiled<{{T}}, {a}, {b}>" for a in ("false", "true") for b in ("false", "true")
)

# Each kernel file and the template kernels it provides; `{T}` is the element type. This is the
# single list the loader compiles (as NVRTC name expressions) and the compile tests instantiate.
KERNELS: dict[str, tuple[str, ...]] = {
    "neurons.cu": ("neuron_forward<{T}>", "neuron_backward<{T}>"),
    "bias.cu": ("bias_neuron_forward<{T}>", "neuron_backward_column_sum<{T}>"),
    "elementwise.cu": ("elementwise_forward<{T}>", "elementwise_backward<{T}>"),
    "power.cu": ("power_forward<{T}>", "power_backward<{T}>"),
    "square_loss.cu": ("square_loss<{T}>",),
    "gaussian_recon_loss.cu": ("gaussian_recon_loss<{T}>",),
    "gaussian_kl_loss.cu": ("gaussian_kl_loss<{T}>",),
    "random_normal.cu": ("philox_normal<{T}>",),
    "gather.cu": ("gather_rows<{T}>",),
    "noise_level.cu": ("noise_level<{T}>",),
    "loss_totals.cu": ("accumulate_losses<{T}>",),
    "solver_update.cu": ("solver_update<{T}>",),
    "gemm.cu": (*_GEMM_VARIANTS, "gemm_sum_splits<{T}>"),
}

SOLVER_METHODS = {"sgd": 0, "nesterov": 1, "adam": 2}  # kernels/solver_update.cu
ELEMENTWISE_OPS = ("Add", "Subtract", "Multiply", "Divide")  # kernels/elementwise.cu

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)
_PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\s*\n", re.MULTILINE)


def kernel_dir() -> Path:
    """The folder of `.cu` files: the installed `mochapy.kernels` package, else the repository's."""
    spec = importlib.util.find_spec("mochapy.kernels")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "kernels"


def name_expressions(file_name: str, dtype: str) -> list[str]:
    """One kernel file's template instantiations for a dtype, e.g. `neuron_forward<float>`."""
    ctype = CTYPES[np.dtype(dtype).name]
    return [expression.format(T=ctype) for expression in KERNELS[file_name]]


def expand_includes(path: Path, seen: set[Path] | None = None) -> str:
    """The source of `path` with every `#include "x"` replaced by x's text, each file once (its
    `#pragma once` dropped: the inlining already guarantees that).

    NVRTC gets one self-contained string, so CuPy's compile cache keys on the headers too.
    """
    seen = set() if seen is None else seen
    path = path.resolve()
    seen.add(path)

    def inline(match: re.Match[str]) -> str:
        header = (path.parent / match.group(1)).resolve()
        if header in seen:
            return ""
        return _PRAGMA_ONCE.sub("", expand_includes(header, seen))

    return _INCLUDE.sub(inline, path.read_text(encoding="utf-8"))


def elementwise_blocks(n: int, sm_count: int) -> int:
    """Blocks for a grid-stride elementwise kernel: one per BLOCK elements, at most a full GPU."""
    return max(1, min(math.ceil(n / BLOCK), 8 * sm_count))


def reduction_blocks(n: int) -> int:
    """Blocks for a one-launch reduction: each thread sums a few elements; at most the workspace."""
    return max(1, min(math.ceil(n / (BLOCK * REDUCTION_ITEMS_PER_THREAD)), MAX_REDUCTION_BLOCKS))


def column_blocks(cols: int) -> int:
    """Blocks for the bias-gradient column sums: one per COLUMN_TILE columns."""
    return max(1, math.ceil(cols / COLUMN_TILE))


def gemm_shape(
    a_shape: tuple[int, ...],
    b_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    trans_a: bool,
    trans_b: bool,
) -> tuple[int, int, int]:
    """(m, n, k) of out = op(a) op(b) for stored 2-D shapes; ValueError when they do not fit."""
    if len(a_shape) != 2 or len(b_shape) != 2 or len(out_shape) != 2:
        raise ValueError(f"gemm needs 2-D arrays, got {a_shape}, {b_shape} -> {out_shape}")
    m, k = reversed(a_shape) if trans_a else a_shape
    k_b, n = reversed(b_shape) if trans_b else b_shape
    if k != k_b or tuple(out_shape) != (m, n):
        raise ValueError(
            f"gemm shapes do not fit: op(a) {m}x{k}, op(b) {k_b}x{n}, out {tuple(out_shape)}"
        )
    return m, n, k


@dataclass(frozen=True)
class GemmPlan:
    """A tiled-GEMM launch: grid (column tiles, row tiles, k slices) and each slice's length."""

    grid: tuple[int, int, int]
    k_chunk: int

    @property
    def splits(self) -> int:
        return self.grid[2]


def gemm_plan(m: int, n: int, k: int, sm_count: int) -> GemmPlan:
    """Split k when the output has too few tiles to fill the GPU (the (100 x 4761) x (4761 x 128)
    products); each slice keeps at least four k-tiles, and no slice is empty."""
    col_tiles = math.ceil(n / GEMM_TILE_N)
    row_tiles = math.ceil(m / GEMM_TILE_M)
    tiles = col_tiles * row_tiles
    splits = 1
    if tiles < sm_count:
        splits = max(1, min(math.ceil(2 * sm_count / tiles), k // (4 * GEMM_TILE_K)))
    k_chunk = math.ceil(math.ceil(k / splits) / GEMM_TILE_K) * GEMM_TILE_K
    return GemmPlan((col_tiles, row_tiles, math.ceil(k / k_chunk)), k_chunk)


CUBLAS_OP_N = 0
CUBLAS_OP_T = 1


def cublas_gemm_args(
    m: int, n: int, k: int, trans_a: bool, trans_b: bool
) -> tuple[int, int, int, int, int, int, int, int]:
    """cuBLAS (column-major) arguments for row-major out (m x n) = op(a) op(b).

    A row-major matrix is its transpose in column-major, so cuBLAS computes out^T = op(b)^T op(a)^T:
    returns (op of b, op of a, rows = n, cols = m, inner = k, ld of b, ld of a, ld of out), to be
    called as gemm(handle, op_b, op_a, n, m, k, alpha, b, ld_b, a, ld_a, beta, out, ld_out).
    """
    return (
        CUBLAS_OP_T if trans_b else CUBLAS_OP_N,
        CUBLAS_OP_T if trans_a else CUBLAS_OP_N,
        n,
        m,
        k,
        k if trans_b else n,
        m if trans_a else k,
        n,
    )


def find_mapped_library(maps_text: str, stem: str) -> str | None:
    """Path of a shared library already mapped into the process (from /proc/self/maps text)
    whose file name is `stem` or `stem.<version>`."""
    for line in maps_text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        name = os.path.basename(path)
        if name == stem or name.startswith(stem + "."):
            return path
    return None


def segment_table(params: Iterable[Any], regu_coef: float) -> tuple[np.ndarray, np.ndarray]:
    """The solver kernel's view of the flat parameter buffer.

    Returns bounds (int64, segments + 1: segment s is bounds[s] <= i < bounds[s + 1]) and
    coefficients (float64, segments x 3: lr_mult, L2 and L1 weight decay including regu_coef).
    Neighbouring parameters with equal coefficients share a segment, so the kernel's search
    stays short. `params` are mochapy.params.Param objects in buffer order.
    """
    bounds: list[int] = []
    rows: list[tuple[float, float, float]] = []
    end = 0
    for param in sorted(params, key=lambda p: p.offset):
        if param.offset != end:
            raise ValueError(f"parameter {param.key!r} starts at {param.offset}, expected {end}")
        regularizer = param.spec.regularizer
        decay = regu_coef * regularizer.coefficient
        row = (
            float(param.spec.lr_mult),
            decay if regularizer.type == "L2" else 0.0,
            decay if regularizer.type == "L1" else 0.0,
        )
        if not rows or rows[-1] != row:
            bounds.append(param.offset)
            rows.append(row)
        end = param.offset + param.size
    if not rows:
        raise ValueError("the net has no parameters to update")
    bounds.append(end)
    return np.asarray(bounds, dtype=np.int64), np.asarray(rows, dtype=np.float64)
