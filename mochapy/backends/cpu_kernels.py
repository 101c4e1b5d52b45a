"""The CPU backend's compiled loops: kernels/cpu/*.c, built on first use with the machine's C
compiler and cached, as the GPU backend builds kernels/*.cu with NVRTC.

NumPy makes one pass over memory per operation. Adam over the poster net's 1.87M parameters is a
dozen such passes, the Gaussian reconstruction loss five, InnerProduct's bias, neuron and bias
gradient three or four; one compiled pass each, split over the cores (ctypes releases the GIL
during a call), takes a fraction of the time. Without a C
compiler, or with MOCHAPY_CPU_KERNELS=0, the CPU backend runs its NumPy paths, which compute the
same values and are what the tests check these loops against.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import math
import os
import platform
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mochapy.backends.interface import SolverStep, adam_step_lr
from mochapy.backends.numpy_kernels import Scratch
from mochapy.backends.plan import SOLVER_METHODS, kernel_dir

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd", "-std=c99", "-fPIC",
         "-shared")
PARALLEL_MIN = 1 << 16  # arrays shorter than this run on the calling thread only
LOSS_BLOCK = 4096  # elements per partial sum of a loss; fixed, so threads do not change totals
ALIGN = LOSS_BLOCK  # thread boundaries fall on whole loss blocks
COLUMN_ALIGN = 16  # a column split falls on whole 64-byte cache lines of float32
PARTS_PER_THREAD = 4  # work is cut finer than the threads, for whichever thread runs first

_POINTER = ctypes.c_void_p
_I64 = ctypes.c_int64
_SIGNATURES = {
    "bias_neuron_forward": (ctypes.c_int, ctypes.c_double, ctypes.c_double, _POINTER, _POINTER,
                            _POINTER, _I64, _I64, _I64),
    "neuron_backward_column_sum": (ctypes.c_int, ctypes.c_double, _POINTER, _POINTER, _POINTER,
                                   _POINTER, _POINTER, _I64, _I64, _I64, _I64),
    "solver_update": (ctypes.c_int, _POINTER, _POINTER, _POINTER, _POINTER, _I64, _I64, _POINTER,
                      _POINTER, ctypes.c_int, _POINTER, ctypes.c_double),
    "gaussian_recon_loss": (_POINTER, _POINTER, _POINTER, _I64, _I64, _I64, ctypes.c_double,
                            ctypes.c_double, ctypes.c_double, _POINTER, _POINTER, _POINTER),
    "gaussian_recon_loss_masked": (_POINTER, _POINTER, _POINTER, _POINTER, _POINTER, ctypes.c_int,
                                   _I64, _I64, _I64, ctypes.c_double, ctypes.c_double,
                                   ctypes.c_double, _POINTER, _POINTER, _POINTER),
}
_C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


class CPUKernelError(RuntimeError):
    """The compiled loops could not be built or loaded (the NumPy paths are used instead)."""


def sources() -> list[Path]:
    return sorted((kernel_dir() / "cpu").glob("*.c"))


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CC", "cc"))


def cache_dir() -> Path:
    root = os.environ.get("MOCHAPY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mochapy"
    )
    return Path(root) / "cpu-kernels"


def _machine_key() -> bytes:
    """What a -march=native binary depends on: the CPU's model and features, the compiler."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = "".join(line for line in f if line.startswith(("flags", "model name")))
    except OSError:
        cpu = platform.processor()
    try:
        version = subprocess.run([*compiler(), "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise CPUKernelError(f"no C compiler ({' '.join(compiler())}): {error}") from error
    return (platform.machine() + cpu + version + " ".join(FLAGS)).encode()


def build_library(folder: Path | None = None) -> Path:
    """Compile every kernels/cpu/*.c into one shared library, reusing a cached build."""
    files = sources()
    if not files:
        raise CPUKernelError(f"no C sources in {kernel_dir() / 'cpu'}")
    digest = hashlib.sha256(_machine_key())
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    folder = folder or cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: build into a private temporary folder instead
        folder = Path(tempfile.mkdtemp(prefix="mochapy-cpu-kernels-"))
    library = folder / f"mochapy-cpu-{digest.hexdigest()[:20]}.so"
    if library.exists():
        return library
    fd, partial = tempfile.mkstemp(dir=folder, suffix=".so.partial")
    os.close(fd)
    try:
        done = subprocess.run([*compiler(), *FLAGS, *map(str, files), "-o", partial, "-lm"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["(no message)"])[0]
            raise CPUKernelError(f"compiling {kernel_dir() / 'cpu'} failed: {first}")
        os.replace(partial, library)  # atomic: concurrent builders each publish a whole file
    except (OSError, subprocess.SubprocessError) as error:
        raise CPUKernelError(f"compiling {kernel_dir() / 'cpu'} failed: {error}") from error
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


def _positive_count(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def chosen_threads() -> int | None:
    """MOCHAPY_NUM_THREADS, when set to a positive number: the user's count for the compiled
    loops and BLAS alike (on a machine shared with other busy processes, fewer threads than cores
    avoid waiting on a descheduled thread at every matrix product)."""
    return _positive_count("MOCHAPY_NUM_THREADS")


def default_threads() -> int:
    """MOCHAPY_NUM_THREADS, else the BLAS's OMP/OPENBLAS_NUM_THREADS, else the usable cores."""
    for name in ("MOCHAPY_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        count = _positive_count(name)
        if count:
            return count
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class CPUKernels:
    """interface.Kernels as the compiled loops of one library, run over `threads` threads."""

    def __init__(self, library: Path, threads: int | None = None) -> None:
        self.path = library
        self.threads = max(1, threads or default_threads())
        lib = ctypes.CDLL(str(library))
        self._functions: dict[tuple[str, np.dtype], Any] = {}
        for name, argtypes in _SIGNATURES.items():
            for dtype, c_type in _C_TYPES.items():
                function = getattr(lib, f"{name}_{c_type}")
                function.argtypes = argtypes
                function.restype = None
                self._functions[name, dtype] = function
        self._pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None
        self.scratch = Scratch()

    def __repr__(self) -> str:
        return f"CPUKernels({self.path.name}, threads={self.threads})"

    def _parts(self, n: int, align: int, work: int) -> list[tuple[int, int]]:
        """[first, stop) ranges of 0..n, PARTS_PER_THREAD per thread (one only when `work`
        elements are fewer than PARALLEL_MIN), each boundary a multiple of `align`."""
        count = self.threads * PARTS_PER_THREAD if work >= PARALLEL_MIN else 1
        step = math.ceil(math.ceil(n / count) / align) * align
        return [(first, min(first + step, n)) for first in range(0, n, step)]

    def _in_parallel(self, call: Callable[[int, int], None], n: int, align: int = ALIGN,
                     work: int | None = None) -> None:
        """call(first, stop) over the parts of range(n): this thread and the pool's take the
        next undone part until none is left, so a thread that the OS does not run for a while
        (a busy machine) leaves its share to the others instead of holding up the step."""
        parts = self._parts(n, align, n if work is None else work)
        if len(parts) == 1 or self._pool is None:
            for part in parts:
                call(*part)
            return
        taken = itertools.count()  # next() on it is atomic under the GIL

        def drain() -> None:
            while (index := next(taken)) < len(parts):
                call(*parts[index])

        helpers = [self._pool.submit(drain) for _ in range(self.threads - 1)]
        drain()
        for helper in helpers:
            if not helper.cancel():  # a helper that never started has nothing to finish
                helper.result()

    # -- InnerProduct's bias and neuron ------------------------------------------------------------
    def bias_neuron_forward(self, neuron: Any, pre: np.ndarray, bias: np.ndarray,
                            y: np.ndarray) -> None:
        """pre += bias (per column); y = neuron(pre): one pass, rows split over the threads
        (y may be pre)."""
        _check_contiguous(pre, bias, y)
        rows, cols = pre.shape
        function = self._functions["bias_neuron_forward", pre.dtype]
        head = (neuron.code, neuron.parameter, neuron.offset, pre.ctypes.data, bias.ctypes.data,
                y.ctypes.data)

        def call(start: int, stop: int) -> None:
            function(*head, start, stop, cols)

        self._in_parallel(call, rows, align=1, work=pre.size)

    def neuron_backward_column_sum(self, neuron: Any, pre: np.ndarray, y: np.ndarray,
                                   dy: np.ndarray, dpre: np.ndarray,
                                   bias_grad: np.ndarray) -> None:
        """dpre = neuron'(pre) dy and bias_grad = column sums of dpre (in NumPy's order), one
        pass with the columns split over the threads (dpre may be dy)."""
        _check_contiguous(pre, y, dy, dpre, bias_grad)
        rows, cols = pre.shape
        function = self._functions["neuron_backward_column_sum", pre.dtype]
        head = (neuron.code, neuron.parameter, pre.ctypes.data, y.ctypes.data, dy.ctypes.data,
                dpre.ctypes.data, bias_grad.ctypes.data, rows, cols)

        def call(start: int, stop: int) -> None:
            function(*head, start, stop)

        self._in_parallel(call, cols, align=COLUMN_ALIGN, work=pre.size)

    # -- solvers ---------------------------------------------------------------------------------
    def solver_update(self, method: str, params: np.ndarray, grads: np.ndarray,
                      states: list[np.ndarray], bounds: np.ndarray, coefficients: np.ndarray,
                      step: SolverStep) -> None:
        """interface.Kernels.solver_update: one pass, the buffer split over the threads."""
        _check_contiguous(params, grads, *states)
        step_lr = adam_step_lr(step) if method == "adam" else step.lr
        hyper = np.array([step.momentum, step.beta1, step.beta2, step.epsilon])
        first, second = (states + [None])[:2]
        function = self._functions["solver_update", params.dtype]
        fixed = (params.ctypes.data, grads.ctypes.data, _address(first), _address(second))
        tail = (bounds.ctypes.data, coefficients.ctypes.data, len(coefficients),
                hyper.ctypes.data, step_lr)

        def call(start: int, stop: int) -> None:
            function(SOLVER_METHODS[method], *fixed, start, stop, *tail)

        self._in_parallel(call, params.size)

    # -- losses ----------------------------------------------------------------------------------
    def gaussian_recon_loss(
        self, mu: np.ndarray, sigma: np.ndarray, x: np.ndarray, scale: float, beta: float,
        mean_inv_var: float, loss: np.ndarray, dmu: np.ndarray | None,
        dsigma: np.ndarray | None, ivar: np.ndarray | None = None, mask: np.ndarray | None = None,
        noise_variance: bool = False,
    ) -> None:
        """interface.Kernels.gaussian_recon_loss: one pass, the pixels split over the threads,
        each fixed block of pixels summed on its own (kernels/cpu/gaussian_recon_loss.c)."""
        _check_contiguous(mu, sigma, x, ivar, mask, dmu, dsigma)
        if noise_variance and ivar is None:
            raise ValueError("noise_variance needs ivar")
        if (dmu is None) != (dsigma is None):  # the loops write both gradients or neither
            dmu, dsigma = (self.scratch.like("unused_gradient", mu) if d is None else d
                           for d in (dmu, dsigma))
        block_sums = self.scratch("block_sums", (loss_blocks(mu.size),), np.float64)
        masked = ivar is not None or mask is not None
        if masked:
            function = self._functions["gaussian_recon_loss_masked", mu.dtype]
            head: tuple[Any, ...] = (mu.ctypes.data, sigma.ctypes.data, x.ctypes.data,
                                     _address(ivar), _address(mask), int(noise_variance))
        else:
            function = self._functions["gaussian_recon_loss", mu.dtype]
            head = (mu.ctypes.data, sigma.ctypes.data, x.ctypes.data)
        tail = (LOSS_BLOCK, scale, beta, mean_inv_var, _address(dmu), _address(dsigma),
                block_sums.ctypes.data)

        def call(start: int, stop: int) -> None:
            function(*head, start, stop, *tail)

        self._in_parallel(call, mu.size)
        loss[0] = 0.5 * scale * float(block_sums.sum())


def loss_blocks(size: int) -> int:
    """How many partial sums a loss over `size` elements needs (the length of `block_sums`)."""
    return math.ceil(size / LOSS_BLOCK)


def _address(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


def _check_contiguous(*arrays: np.ndarray | None) -> None:
    for array in arrays:
        if array is not None and not array.flags.c_contiguous:
            raise ValueError("the compiled CPU loops need C-contiguous arrays")


@functools.cache
def load() -> CPUKernels | str:
    """The compiled loops (built once per process), or why they are not available."""
    if os.environ.get("MOCHAPY_CPU_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return "switched off by MOCHAPY_CPU_KERNELS"
    try:
        return CPUKernels(build_library())
    except (CPUKernelError, OSError, AttributeError) as error:
        return (str(error).splitlines() or [type(error).__name__])[0]
