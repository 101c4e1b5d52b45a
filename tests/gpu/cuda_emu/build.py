"""Compiling CUDA sources as C++ against cuda_emu.h, and launching their kernels through ctypes.

A source is what CuPy's RawModule gets (kernels/*.cu with includes inlined) plus its name
expressions; each expression gets a C entry point that runs the grid on the CPU and one that
describes the kernel's parameters (kind and size of each, and of what a pointer points at), so the
stand-in can check every launch's arguments against the instantiated signature. Built libraries
are cached by a hash of everything that goes into them.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shlex
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HEADER = Path(__file__).with_name("cuda_emu.h")
CXX_FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-fno-strict-aliasing", "-w")
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIM = (1024, 1024, 64)
MAX_GRID_DIM = (2**31 - 1, 65535, 65535)
ORDERS = ("natural", "reversed", "shuffled")

_LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\(\s*([^,)]+)[^)]*\)\s*(\w+)\s*\(")
# A block-scope `__shared__ type name[dims];` (no initialiser), on one line.
_SHARED = re.compile(r"(?<!extern )__shared__\s+([^;=(){}]+?)\s+(\w+)((?:\s*\[[^\]]*\])*)\s*;")
_ERROR_BYTES = 1024


class EmulationError(RuntimeError):
    """A kernel did something undefined on a GPU (divergent barrier, bad argument, ...)."""


class CompileError(EmulationError):
    """g++ rejected a source (what NVRTC would also reject, or what the emulation lacks)."""


@dataclass(frozen=True)
class Parameter:
    """One kernel parameter: kind (1 signed int, 2 unsigned int, 3 float, 4 pointer, 0 other),
    size in bytes, and for pointers the kind and size of the element."""

    kind: int
    size: int
    element_kind: int
    element_size: int

    def __str__(self) -> str:
        names = {1: "int", 2: "unsigned", 3: "float", 4: "pointer", 0: "other"}
        text = f"{names[self.kind]}{8 * self.size}"
        if self.kind == 4:
            text += f" to {names[self.element_kind]}{8 * self.element_size}"
        return text


class Kernel:
    """One instantiated kernel of a built library: its parameters and its launcher."""

    def __init__(self, library: ctypes.CDLL, index: int, name: str) -> None:
        self.name = name
        describe = getattr(library, f"cuda_emu_describe_{index}")
        describe.argtypes = [ctypes.POINTER(ctypes.c_longlong)]
        out = (ctypes.c_longlong * 256)()
        count = describe(out)
        self.parameters = [Parameter(*out[4 * i: 4 * i + 4]) for i in range(count)]
        self.max_threads = int(getattr(library, f"cuda_emu_bound_{index}")())
        self._launch = getattr(library, f"cuda_emu_launch_{index}")
        self._launch.argtypes = [
            ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_ulonglong, ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        self._launch.restype = ctypes.c_int

    def check_geometry(self, grid: tuple[int, int, int], block: tuple[int, int, int]) -> None:
        """CUDA's launch limits, and the kernel's own __launch_bounds__."""
        threads = block[0] * block[1] * block[2]
        if min(*grid, *block) < 1:
            raise EmulationError(f"{self.name}: empty launch, grid {grid} block {block}")
        if threads > min(MAX_THREADS_PER_BLOCK, self.max_threads):
            raise EmulationError(
                f"{self.name}: {threads} threads per block, more than "
                f"{min(MAX_THREADS_PER_BLOCK, self.max_threads)} (launch limit or bounds)"
            )
        for axis, (size, limit) in enumerate(zip(block, MAX_BLOCK_DIM, strict=True)):
            if size > limit:
                raise EmulationError(f"{self.name}: block dimension {axis} is {size} > {limit}")
        for axis, (size, limit) in enumerate(zip(grid, MAX_GRID_DIM, strict=True)):
            if size > limit:
                raise EmulationError(f"{self.name}: grid dimension {axis} is {size} > {limit}")

    def run(
        self, grid: tuple[int, int, int], block: tuple[int, int, int], buffers: list[bytes],
        order: int, seed: int,
    ) -> None:
        """Run the grid with marshalled argument bytes (one bytes object per parameter)."""
        holders = [ctypes.create_string_buffer(buffer, len(buffer)) for buffer in buffers]
        pointers = (ctypes.c_void_p * max(1, len(holders)))(
            *[ctypes.addressof(holder) for holder in holders]
        )
        error = ctypes.create_string_buffer(_ERROR_BYTES)
        status = self._launch(
            (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), pointers, order, seed,
            error, _ERROR_BYTES,
        )
        if status != 0:
            raise EmulationError(f"{self.name} ({ORDERS[order]} order): {error.value.decode()}")


class Library:
    """A built source: its kernels by name expression."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path = path
        self._library = ctypes.CDLL(str(path))
        self.kernels = {name: Kernel(self._library, i, name) for i, name in enumerate(names)}


def translation_unit(code: str, names: list[str]) -> str:
    """The C++ that g++ builds: the emulation header, the source, and two entry points per name."""
    bounds = {kernel: expression for expression, kernel in _LAUNCH_BOUNDS.findall(code)}
    registered = _SHARED.sub(
        r"__shared__ \1 \2\3; cuda_emu::shared(&\2, sizeof(\2));", code
    )
    lines = [f'#include "{HEADER}"', '#line 1 "kernel.cu"', registered, 'extern "C" {']
    for i, name in enumerate(names):
        bound = bounds.get(name.split("<")[0].strip(), str(MAX_THREADS_PER_BLOCK))
        lines += [
            f"int cuda_emu_launch_{i}(const unsigned* g, const unsigned* b, void** a, int order,"
            f" unsigned long long seed, char* e, size_t n) {{"
            f" return cuda_emu::launch(&{name}, g, b, a, order, seed, e, n); }}",
            f"int cuda_emu_describe_{i}(long long* out) {{"
            f" return cuda_emu::describe(&{name}, out); }}",
            f"int cuda_emu_bound_{i}() {{ return (int)({bound}); }}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class Builder:
    """Builds sources into a cache folder (by content hash) and keeps loaded libraries."""

    def __init__(self, cache_dir: Path, compiler: str = "g++") -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.compiler = shlex.split(compiler)
        self._loaded: dict[str, list[tuple[frozenset[str], Library]]] = {}
        self._lock = threading.Lock()

    def _key(self, code: str, names: Iterable[str]) -> str:
        digest = hashlib.sha256()
        for part in (HEADER.read_text(), " ".join(CXX_FLAGS), code, "\n".join(sorted(names))):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:24]

    def library(self, code: str, names: Iterable[str]) -> Library:
        """A loaded library providing at least `names` for `code` (built now if no cached one)."""
        wanted = frozenset(names)
        code_key = hashlib.sha256(code.encode()).hexdigest()
        with self._lock:
            for provided, library in self._loaded.get(code_key, []):
                if wanted <= provided:
                    return library
        library = self.build(code, sorted(wanted))
        with self._lock:
            self._loaded.setdefault(code_key, []).append((wanted, library))
        return library

    def build(self, code: str, names: list[str]) -> Library:
        path = self.cache_dir / f"kernels-{self._key(code, names)}.so"
        if not path.exists():
            source = path.with_suffix(".cpp")
            source.write_text(translation_unit(code, names))
            partial = path.with_suffix(f".{threading.get_ident()}.tmp")
            result = subprocess.run(
                [*self.compiler, *CXX_FLAGS, "-o", str(partial), str(source)],
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise CompileError(f"g++ failed on {source}:\n{result.stderr[-4000:]}")
            partial.replace(path)
        return Library(path, names)
