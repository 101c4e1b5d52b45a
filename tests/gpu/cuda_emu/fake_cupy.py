"""A CuPy stand-in for the GPU backend: device arrays in guarded host memory, RawModule kernels run
by the CPU emulation (build.py), streams whose capture records work by value into replayable
graphs, and the cuBLAS / cuTENSOR calls mochapy makes, computed with NumPy.

It covers exactly what mochapy.backends.gpu* and the layers' GPU paths use. What it checks, beyond
running the code: kernel arguments marshalled as CuPy marshals them (Python int -> 64-bit,
float -> double) against each instantiated kernel's parameter kinds and sizes; writes past either
end of a device array (guard zones checked after every kernel); host synchronisation, pageable
host-device copies, module compilation and CuPy's cuBLAS calls during a stream capture (refused,
and the capture invalidated, as CUDA does); allocations from the shared pool during a capture;
host NumPy arrays mixed into device operations (a TypeError, as in CuPy).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .build import Builder, EmulationError, Kernel, Parameter

GUARD_BYTES = 256
GUARD_BYTE = 0xA5
POISON_BYTE = 0xFF  # NaN in float32 and float64
DEVICE_NAME = "CUDA emulation on the CPU (tests/gpu/cuda_emu)"
DEVICE_MEMORY = 8 << 30
_CUBLAS_SHIM = Path(__file__).with_name("cublas_shim.c")
_KINDS = {"i": 1, "u": 2, "f": 3}


class CaptureError(RuntimeError):
    """An operation CUDA refuses while a stream is capturing (cudaErrorStreamCaptureUnsupported)."""


class GuardError(EmulationError):
    """A kernel wrote outside a device array."""


# -- device memory ------------------------------------------------------------------------------
class Allocation:
    """One device allocation: the data between two guard zones of a known byte pattern."""

    def __init__(self, nbytes: int, label: str) -> None:
        self.nbytes = nbytes
        self.label = label
        self.raw = np.full(GUARD_BYTES + nbytes + GUARD_BYTES, GUARD_BYTE, dtype=np.uint8)
        self.raw[GUARD_BYTES: GUARD_BYTES + nbytes] = POISON_BYTE

    def data(self) -> np.ndarray:
        return self.raw[GUARD_BYTES: GUARD_BYTES + self.nbytes]

    def check(self, what: str) -> None:
        for zone, name in ((self.raw[:GUARD_BYTES], "before"), (self.raw[-GUARD_BYTES:], "after")):
            if not (zone == GUARD_BYTE).all():
                zone[...] = GUARD_BYTE
                raise GuardError(f"{what} wrote {name} the end of a device array ({self.label})")


class MemoryPointer:
    """`array.data`: CuPy's MemoryPointer, of which mochapy reads only `ptr`."""

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


def _base(value: Any) -> Any:
    """Device arrays as plain NumPy views (for computing), recursively through lists and tuples."""
    if isinstance(value, DeviceArray):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_base(item) for item in value)
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.view(DeviceArray)
    if isinstance(value, np.generic):
        return np.asarray(value).view(DeviceArray)  # CuPy reductions give 0-d device arrays
    if isinstance(value, tuple):
        return tuple(_wrap(item) for item in value)
    return value


def _reject_host_arrays(values: Any, what: str) -> None:
    for value in values:
        if isinstance(value, (list, tuple)):
            _reject_host_arrays(value, what)
        elif isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
            raise TypeError(f"Unsupported type {type(value)} in {what}: a host NumPy array mixed "
                            "with device arrays (CuPy refuses it)")


def _is_basic_index(key: Any) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (int, np.integer, slice, type(None), type(Ellipsis))) for k in keys)


class DeviceArray(np.ndarray):
    """cupy.ndarray: a NumPy array in guarded memory whose every operation goes through the
    emulator, so that it runs now or, on a capturing stream, is recorded for the graph."""

    __array_priority__ = 100.0
    emulator: Emulator

    def __array_finalize__(self, obj: Any) -> None:
        self._allocation = getattr(obj, "_allocation", None)

    @property
    def data(self) -> MemoryPointer:  # type: ignore[override]
        return MemoryPointer(self.__array_interface__["data"][0])

    def get(self, stream: Any = None, order: str = "C", out: Any = None) -> np.ndarray:
        self.emulator.refuse_in_capture("ndarray.get (a device-to-host copy and a host sync)")
        return np.array(self.view(np.ndarray), order=order, copy=True)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        self.emulator.refuse_in_capture("ndarray.set (a pageable host-to-device copy)")
        if not isinstance(arr, np.ndarray) or isinstance(arr, DeviceArray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch: {arr.shape} set to {self.shape}")
        self.view(np.ndarray)[...] = arr

    # -- host values: each one synchronises with the device --------------------------------------
    def _host_value(self, convert: Callable[[np.ndarray], Any], what: str) -> Any:
        self.emulator.refuse_in_capture(f"{what} of a device array (a host sync)")
        return convert(self.view(np.ndarray))

    def __float__(self) -> float:
        return self._host_value(float, "float()")

    def __int__(self) -> int:
        return self._host_value(int, "int()")

    def __bool__(self) -> bool:
        return self._host_value(bool, "bool()")

    def item(self, *args: Any) -> Any:
        return self._host_value(lambda a: a.item(*args), "item()")

    def tolist(self) -> Any:
        return self._host_value(lambda a: a.tolist(), "tolist()")

    # -- device operations -----------------------------------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        _reject_host_arrays((*inputs, *(out or ())), f"numpy.{ufunc.__name__}")
        base_inputs = _base(inputs)
        operation = getattr(ufunc, method)
        emulator = self.emulator
        if emulator.capturing_stream() is None:
            if out is not None:
                operation(*base_inputs, out=_base(out), **kwargs)
                return out[0] if len(out) == 1 else out
            return _wrap(operation(*base_inputs, **kwargs))
        if ufunc is np.matmul:
            emulator.refuse_in_capture("cupy.matmul (CuPy's cuBLAS calls refuse a capture)")
        if out is None:  # learn the result's shape and dtype, then record into fresh memory
            probe = operation(*base_inputs, **kwargs)
            probes = probe if isinstance(probe, tuple) else (probe,)
            out = tuple(emulator.empty(np.shape(p), np.asarray(p).dtype) for p in probes)
        emulator.submit(functools.partial(operation, *base_inputs, out=_base(out), **kwargs),
                        f"numpy.{ufunc.__name__}.{method}", ())
        return out[0] if len(out) == 1 else out

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        _reject_host_arrays((*args, *kwargs.values()), f"numpy.{func.__name__}")
        emulator = self.emulator
        if func in (np.dot, np.matmul, np.vdot, np.inner, np.tensordot):
            emulator.refuse_in_capture(f"cupy.{func.__name__} (CuPy's cuBLAS calls refuse a "
                                       "capture)")
        if emulator.capturing_stream() is not None:
            raise EmulationError(f"numpy.{func.__name__} during a capture is not modelled by the "
                                 "emulation; use ufuncs with out= or a kernel")
        return _wrap(func(*_base(args), **_base(kwargs)))

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
            self.emulator.refuse_in_capture("ndarray.__setitem__ from a host array (a copy)")
        target, source = self.view(np.ndarray), _base(value)
        self.emulator.submit(lambda: target.__setitem__(key, source), "ndarray.__setitem__", ())

    def __getitem__(self, key: Any) -> Any:
        if not _is_basic_index(key) and self.emulator.capturing_stream() is not None:
            raise EmulationError("fancy indexing during a capture is not modelled by the emulation")
        return super().__getitem__(key)

    def fill(self, value: Any) -> None:
        target = self.view(np.ndarray)
        self.emulator.submit(lambda: target.fill(value), "ndarray.fill", ())

    def copy(self, order: str = "C") -> DeviceArray:  # type: ignore[override]
        return self.astype(self.dtype)

    def astype(self, dtype: Any, copy: bool = True, **kwargs: Any) -> DeviceArray:  # type: ignore[override]
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        result = self.emulator.empty(self.shape, dtype)
        target, source = result.view(np.ndarray), self.view(np.ndarray)
        self.emulator.submit(lambda: target.__setitem__(Ellipsis, source), "ndarray.astype", ())
        return result


# -- streams and graphs -------------------------------------------------------------------------
class Stream:
    """cupy.cuda.Stream: `use()`, `with stream:`, synchronize, and capture into a Graph."""

    _ids = itertools.count(0x5000)

    def __init__(self, emulator: Emulator, null: bool = False) -> None:
        self.emulator = emulator
        self.ptr = 0 if null else next(self._ids)
        self.records: list[tuple[Callable[[], None], str, tuple[Allocation, ...]]] | None = None
        self.invalidated: str | None = None
        self._previous: list[Stream] = []

    def use(self) -> Stream:
        self.emulator.current_stream = self
        return self

    def __enter__(self) -> Stream:
        self._previous.append(self.emulator.current_stream)
        self.emulator.current_stream = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self.emulator.current_stream = self._previous.pop()

    def synchronize(self) -> None:
        self.emulator.refuse_in_capture("Stream.synchronize")

    def is_capturing(self) -> bool:
        return self.records is not None

    def begin_capture(self, mode: Any = None) -> None:
        if self.ptr == 0:
            raise CaptureError("the legacy default stream cannot be captured")
        if self.emulator.capturing_stream() is not None:
            raise CaptureError("a stream is capturing already")
        self.records, self.invalidated = [], None

    def end_capture(self) -> Graph:
        if self.records is None:
            raise CaptureError("end_capture on a stream that is not capturing")
        records, invalidated = self.records, self.invalidated
        self.records, self.invalidated = None, None
        if invalidated:
            raise CaptureError(f"cudaErrorStreamCaptureInvalidated: {invalidated}")
        return Graph(self.emulator, records)


class Graph:
    """A captured stream: its work, replayed in order by `launch`."""

    def __init__(self, emulator: Emulator, records: list) -> None:
        self.emulator = emulator
        self.records = records

    def launch(self, stream: Any = None) -> None:
        self.emulator.refuse_in_capture("Graph.launch")
        for run, what, guarded in self.records:
            self.emulator.execute(run, what, guarded)


class MemoryPool:
    """cupy.cuda.MemoryPool: only its `malloc`, handed to `using_allocator`, is used; inside that
    block the emulator counts allocations as private (see Emulator.empty)."""

    def malloc(self, size: int) -> None:
        raise EmulationError("the emulation allocates through cupy.empty, not MemoryPool.malloc")


# -- kernels ------------------------------------------------------------------------------------
def _marshal(argument: Any) -> tuple[bytes, str, Any]:
    """An argument as CuPy passes it: (bytes, a description, the NumPy kind/size or array)."""
    if argument is None:
        return bytes(8), "None", None
    if isinstance(argument, DeviceArray):
        return ctypes.c_void_p(argument.data.ptr).value.to_bytes(8, sys.byteorder), \
            f"array {argument.dtype}", argument
    if isinstance(argument, np.ndarray):
        raise TypeError(f"Unsupported type {type(argument)} as a kernel argument")
    if isinstance(argument, np.generic):
        scalar = argument
    elif isinstance(argument, int):  # bool included, as in CuPy
        scalar = np.int64(argument)
    elif isinstance(argument, float):
        scalar = np.float64(argument)
    else:
        raise TypeError(f"Unsupported type {type(argument)} as a kernel argument")
    return scalar.tobytes(), f"{scalar.dtype}", scalar.dtype


def _check_argument(parameter: Parameter, marshalled: tuple[bytes, str, Any], where: str) -> None:
    data, description, detail = marshalled
    if parameter.kind == 4:
        if detail is not None and not isinstance(detail, DeviceArray):
            raise EmulationError(f"{where}: {description} passed for a {parameter} parameter")
        if isinstance(detail, DeviceArray):
            kind = _KINDS.get(detail.dtype.kind, 0)
            if (kind, detail.dtype.itemsize) != (parameter.element_kind, parameter.element_size):
                raise EmulationError(f"{where}: {description} passed for a {parameter} parameter")
            if not detail.flags.c_contiguous:
                raise EmulationError(f"{where}: a non-contiguous array view passed to a kernel")
        return
    if detail is None or isinstance(detail, DeviceArray):
        raise EmulationError(f"{where}: {description} passed for a {parameter} parameter")
    if (_KINDS.get(detail.kind, 0), len(data)) != (parameter.kind, parameter.size):
        hint = " (CuPy passes Python int as int64, float as float64)" if len(data) == 8 else ""
        raise EmulationError(f"{where}: {description} passed for a {parameter} parameter{hint}")


class Function:
    """A kernel of a RawModule: checks and marshals the launch, then runs or records it."""

    def __init__(self, emulator: Emulator, kernel: Kernel) -> None:
        self.emulator = emulator
        self.kernel = kernel

    def __call__(
        self, grid: Any, block: Any, args: tuple, *, shared_mem: int = 0, stream: Any = None,
        enable_cooperative_groups: bool = False,
    ) -> None:
        name = self.kernel.name
        grid3 = tuple(grid) + (1,) * (3 - len(tuple(grid)))
        block3 = tuple(block) + (1,) * (3 - len(tuple(block)))
        self.kernel.check_geometry(grid3, block3)
        parameters = self.kernel.parameters
        if len(args) != len(parameters):
            raise EmulationError(f"{name}: {len(args)} arguments for {len(parameters)} parameters")
        marshalled = [_marshal(argument) for argument in args]
        for index, (parameter, value) in enumerate(zip(parameters, marshalled, strict=True)):
            _check_argument(parameter, value, f"{name} argument {index}")
        buffers = [data for data, _, _ in marshalled]  # by value, as a capture records them
        guarded = tuple(
            detail._allocation for _, _, detail in marshalled
            if isinstance(detail, DeviceArray) and detail._allocation is not None
        )
        run = functools.partial(self.emulator.run_kernel, self.kernel, grid3, block3, buffers)
        self.emulator.submit(run, name, guarded, stream)


class RawModule:
    """cupy.RawModule: compiled (here by g++ against cuda_emu.h) at the first get_function."""

    def __init__(self, emulator: Emulator, code: str, options: tuple = (),
                 name_expressions: Any = None, **kwargs: Any) -> None:
        self.emulator = emulator
        self.code = code
        self.options = tuple(options)
        self.name_expressions = list(name_expressions or ())
        self._library: Any = None

    def get_function(self, name: str) -> Function:
        if self._library is None:
            self.emulator.refuse_in_capture("compiling and loading a module (RawModule)")
            self._library = self.emulator.builder.library(self.code, self.name_expressions)
            self.emulator.compiled_modules += 1
        if name not in self._library.kernels:
            raise EmulationError(f"{name!r} is not among the module's name expressions")
        return Function(self.emulator, self._library.kernels[name])


# -- the emulator -------------------------------------------------------------------------------
class Emulator:
    """One emulated device and the `cupy` / `cupyx` modules that front it."""

    def __init__(self, cache_dir: Path, sm_count: int = 8, seed: int = 0) -> None:
        self.cache_dir = Path(cache_dir)
        self.builder = Builder(self.cache_dir)
        self.sm_count = sm_count
        self.seed = seed
        self.launches = 0
        self.compiled_modules = 0
        self.private_allocator = 0
        self.null_stream = Stream(self, null=True)
        self.current_stream = self.null_stream
        self._streams: list[Stream] = [self.null_stream]
        self._cublas: Any = None
        self._cublas_callback: Any = None
        DeviceArray.emulator = self
        self.cupy, self.cupyx = self._modules()

    # -- capture state and the work queue --------------------------------------------------------
    def capturing_stream(self) -> Stream | None:
        for stream in self._streams:
            if stream.records is not None:
                return stream
        return None

    def refuse_in_capture(self, what: str) -> None:
        """Raise (and invalidate the capture, as CUDA does) if any stream is capturing."""
        stream = self.capturing_stream()
        if stream is not None:
            stream.invalidated = stream.invalidated or what
            raise CaptureError(f"{what} is not allowed while a stream is capturing")

    def submit(self, run: Callable[[], None], what: str, guarded: tuple[Allocation, ...],
               stream: Any = None) -> None:
        """Run device work now, or record it if its stream is capturing."""
        stream = self.current_stream if stream is None else stream
        capturing = self.capturing_stream()
        if stream.records is not None:
            stream.records.append((run, what, guarded))
        elif capturing is not None and stream.ptr == 0:
            self.refuse_in_capture(f"{what} on the legacy default stream")
        else:
            self.execute(run, what, guarded)

    def execute(self, run: Callable[[], None], what: str,
                guarded: tuple[Allocation, ...]) -> None:
        run()
        for allocation in guarded:
            allocation.check(what)

    def run_kernel(self, kernel: Kernel, grid: tuple, block: tuple, buffers: list[bytes]) -> None:
        """One grid, its blocks and threads in natural, reversed or shuffled order by turns."""
        order = self.launches % 3
        self.launches += 1
        kernel.run(grid, block, buffers, order, self.seed + self.launches)

    # -- memory ----------------------------------------------------------------------------------
    def empty(self, shape: Any, dtype: Any = float, label: str = "") -> DeviceArray:
        if not self.private_allocator:
            self.refuse_in_capture("an allocation from CuPy's shared pool (the graph would keep "
                                   "using memory the pool hands out again after the capture)")
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        allocation = Allocation(nbytes, label or f"{dtype}{list(shape)}")
        array = allocation.data().view(dtype).reshape(shape).view(DeviceArray)
        array._allocation = allocation
        return array

    def full(self, shape: Any, fill_value: Any, dtype: Any = None) -> DeviceArray:
        dtype = np.asarray(fill_value).dtype if dtype is None else dtype
        array = self.empty(shape, dtype)
        array.fill(fill_value)
        return array

    def asarray(self, values: Any, dtype: Any = None) -> DeviceArray:
        if isinstance(values, DeviceArray) and (dtype is None or np.dtype(dtype) == values.dtype):
            return values
        if isinstance(values, DeviceArray):
            return values.astype(dtype)
        self.refuse_in_capture("cupy.asarray of host data (a host-to-device copy)")
        host = np.ascontiguousarray(np.asarray(values, dtype=dtype))
        array = self.empty(host.shape, host.dtype)
        array.view(np.ndarray)[...] = host
        return array

    # -- cuBLAS and cuTENSOR ---------------------------------------------------------------------
    def load_cublas(self) -> int:
        """Build and load the stand-in libcublas (globally, so it shows in /proc/self/maps)."""
        if self._cublas is None:
            folder = self.cache_dir / "cublas"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "libcublas.so.12"
            if not path.exists():
                command = ["cc", "-O1", "-fPIC", "-shared", "-o", str(path), str(_CUBLAS_SHIM)]
                subprocess.run(command, check=True, capture_output=True)
            library = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            prototype = ctypes.CFUNCTYPE(
                ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                ctypes.c_int, ctypes.c_void_p,
            )
            self._cublas_callback = prototype(self._cublas_gemm)
            library.cuda_emu_set_gemm_callback(self._cublas_callback)
            self._cublas = library
        return 1

    def _cublas_gemm(self, is_double: int, stream_ptr: int | None, trans_a: int, trans_b: int,
                     m: int, n: int, k: int, alpha: int, a: int, lda: int, b: int, ldb: int,
                     beta: int, c: int, ldc: int, workspace: int | None) -> int:
        """C = alpha op(A) op(B) + beta C, column-major, as cuBLAS computes it (status 0 or 13)."""
        try:
            ctype = ctypes.c_double if is_double else ctypes.c_float
            scalars = (ctype.from_address(alpha).value, ctype.from_address(beta).value)
            stream = next((s for s in self._streams if s.ptr == (stream_ptr or 0)), None)
            if stream is None:
                raise EmulationError(f"cuBLAS handle bound to an unknown stream {stream_ptr}")

            def column_major(ptr: int, rows: int, cols: int, ld: int) -> np.ndarray:
                span = (cols - 1) * ld + rows
                flat = np.ctypeslib.as_array((ctype * span).from_address(ptr))
                return np.lib.stride_tricks.as_strided(
                    flat, (rows, cols), (flat.itemsize, ld * flat.itemsize)
                )

            def run() -> None:
                op_a = column_major(a, k, m, lda).T if trans_a else column_major(a, m, k, lda)
                op_b = column_major(b, n, k, ldb).T if trans_b else column_major(b, k, n, ldb)
                out = column_major(c, m, n, ldc)
                product = scalars[0] * (op_a @ op_b)
                out[...] = product if scalars[1] == 0 else product + scalars[1] * out

            self.submit(run, "cublasXgemm", (), stream)
            return 0
        except Exception as error:  # a C caller cannot take a Python exception: say why here
            print(f"cuBLAS stand-in: {type(error).__name__}: {error}", file=sys.stderr)
            return 13  # CUBLAS_STATUS_EXECUTION_FAILED

    def cutensor_contraction(self, alpha: float, a: Any, modes_a: tuple, b: Any, modes_b: tuple,
                             beta: float, c: Any, modes_c: tuple, **kwargs: Any) -> Any:
        """cupyx.cutensor.contraction, which CuPy allows during a capture."""
        spec = f"{''.join(modes_a)},{''.join(modes_b)}->{''.join(modes_c)}"
        target, x, y = c.view(np.ndarray), a.view(np.ndarray), b.view(np.ndarray)

        def run() -> None:
            product = alpha * np.einsum(spec, x, y)
            target[...] = product if beta == 0 else product + beta * target

        self.submit(run, "cutensor.contraction", ())
        return c

    # -- the modules -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _using_allocator(self, allocator: Any = None) -> Iterator[None]:
        self.private_allocator += 1
        try:
            yield
        finally:
            self.private_allocator -= 1

    def _new_stream(self, null: bool = False) -> Stream:
        stream = Stream(self, null=null)
        self._streams.append(stream)
        return stream

    def _modules(self) -> tuple[types.ModuleType, types.ModuleType]:
        emulator = self
        cupy = types.ModuleType("cupy")
        cupy.__doc__ = "CuPy stand-in of tests/gpu/cuda_emu"
        cupy.ndarray = DeviceArray
        cupy.empty = lambda shape, dtype=float, order="C": emulator.empty(shape, dtype)
        cupy.zeros = lambda shape, dtype=float, order="C": emulator.full(shape, 0, dtype)
        cupy.ones = lambda shape, dtype=float, order="C": emulator.full(shape, 1, dtype)
        cupy.full = lambda shape, fill_value, dtype=None: emulator.full(shape, fill_value, dtype)
        cupy.asarray = lambda values, dtype=None: emulator.asarray(values, dtype)
        cupy.RawModule = lambda code=None, **kwargs: RawModule(emulator, code, **kwargs)
        # Everything else (ufuncs such as add or isfinite, dtypes) is NumPy's: ufuncs dispatch
        # to DeviceArray.__array_ufunc__, so they run or are recorded like CuPy's kernels.
        cupy.__getattr__ = lambda name: getattr(np, name)

        cuda = types.ModuleType("cupy.cuda")
        cuda.Stream = lambda null=False, non_blocking=False: emulator._new_stream(null)
        cuda.get_current_stream = lambda: emulator.current_stream
        cuda.MemoryPool = MemoryPool
        cuda.using_allocator = emulator._using_allocator
        cuda.Device = lambda device=0: types.SimpleNamespace(
            id=0, attributes={"MultiProcessorCount": emulator.sm_count},
            synchronize=lambda: emulator.refuse_in_capture("Device.synchronize"),
        )
        cuda.runtime = types.SimpleNamespace(
            getDeviceCount=lambda: 1,
            getDeviceProperties=lambda device: {"name": DEVICE_NAME.encode(),
                                                "multiProcessorCount": emulator.sm_count},
            memGetInfo=lambda: (DEVICE_MEMORY // 2, DEVICE_MEMORY),
            runtimeGetVersion=lambda: 12080,
            driverGetVersion=lambda: 12080,
        )
        cuda.device = types.SimpleNamespace(get_cublas_handle=emulator.load_cublas)
        cupy.cuda = cuda

        cupyx = types.ModuleType("cupyx")
        cupyx.cutensor = types.ModuleType("cupyx.cutensor")
        cupyx.cutensor.contraction = emulator.cutensor_contraction
        return cupy, cupyx

    @contextlib.contextmanager
    def installed(self) -> Iterator[Emulator]:
        """`import cupy` / `import cupyx` give the stand-in within the block."""
        names = {"cupy": self.cupy, "cupy.cuda": self.cupy.cuda, "cupyx": self.cupyx,
                 "cupyx.cutensor": self.cupyx.cutensor}
        saved = {name: sys.modules.get(name) for name in names}
        sys.modules.update(names)
        try:
            yield self
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
