"""Training speed of the poster's galaxy VAE: mochapy (CPU; GPU eager and GPU CUDA graph) beside
PyTorch (eager and torch.compile) and JAX (jit), interleaved in one run, against the GEMM ceiling.

The net is examples/galaxy_vae_poster.yaml's (69x69x1, 2x128 ReLU encoder and decoder, z = 8, Adam,
1,874,114 parameters; --bands 3 widens the image to 69x69x3) with a MemoryData layer over a fixed
set of images instead of the built-in data, so that data generation is not timed (mochapy still
gathers a shuffled batch each step; the peers reuse one resident batch). A step is forward,
backward and the solver update.

Every system is built and warmed up first; then each of `--repeats` rounds times every system for
about `--seconds`, in an order that rotates from round to round, so a noisy neighbour slows all
rows alike. Rows give the median rate and its spread (lowest and highest round). The ceiling row
times the step's matrix products alone (the same shapes, NumPy's BLAS, no other work): the rate
the step would run at if it were pure GEMM; each system's fraction of it is printed.
--profile prints mochapy's step layer by layer and phase by phase first. Systems that are missing
here are listed as skipped, with the reason.

    python benchmarks/iters_per_sec.py [--backend cpu|gpu] [--batch 100] [--bands 1] [--sweep]
                                       [--profile] [--json F] [--repeats 5] [--seconds 1]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import peers  # noqa: E402  (benchmarks/peers.py, beside this file)

from mochapy.atomic import write_text_atomically  # noqa: E402
from mochapy.backends import CPUBackend, gpu_available  # noqa: E402
from mochapy.config import load_config  # noqa: E402
from mochapy.errors import BackendError  # noqa: E402
from mochapy.layers.memory_data import MemoryDataConfig  # noqa: E402
from mochapy.net import Net  # noqa: E402
from mochapy.solvers import make_solver  # noqa: E402

POSTER_ITERS_PER_SEC = 200.0  # Regier et al., Tesla K20X
NET_YAML = REPO / "examples" / "galaxy_vae_poster.yaml"
SIDE = 69
N_IMAGES = 1000  # the resident dataset mochapy's batches are drawn from
WARMUP = {"cpu": 3, "cuda": 50}
SETTLE_SECONDS = 0.2  # between timed runs, so one system's spinning threads go idle first
SWEEP = ((1, 1), (10, 1), (100, 1), (1000, 1), (100, 3))  # (batch, bands) of --sweep
DECODER_HEADS = ("x_mu", "x_sigma")  # the YAML's layers whose width is the image's
LABELS = {
    "mochapy": "mochapy cpu", "mochapy-numpy": "mochapy cpu, NumPy only",
    "mochapy-eager": "mochapy gpu eager", "mochapy-graph": "mochapy gpu graph",
    "torch": "PyTorch eager", "torch-compile": "torch.compile", "jax": "JAX jit",
    "gemm-ceiling": "GEMM ceiling",
}


@dataclass
class System:
    """One row's training step, built and ready to time."""

    name: str  # a LABELS key
    backend: str
    step: Callable[[], None]
    synchronize: Callable[[], None]
    note: str
    peak_memory: Callable[[], int | None] = lambda: None
    count: int = 1  # steps per timed run, set by calibrate
    rates: list[float] = field(default_factory=list)
    cores_busy: list[float] = field(default_factory=list)  # process CPU time / wall, per round


# -- the net --------------------------------------------------------------------------------------
def poster_net(backend: Any, batch: int, images: np.ndarray) -> tuple[Net, Any]:
    """The YAML's net and solver with its HDF5Data layer replaced by MemoryData over `images`
    (N, bands, 69, 69), the decoder's heads as wide as one image."""
    config = load_config(str(NET_YAML))
    pixels = int(np.prod(images.shape[1:]))
    layers, memory_data = [], {}
    for layer in config.layers:
        if layer.type_name == "HDF5Data":
            layer = MemoryDataConfig(name=layer.name, tops=layer.tops, batch_size=batch,
                                     shuffle=True)
            memory_data[layer.name] = {layer.tops[0]: images}
        elif layer.name in DECODER_HEADS:
            layer = dataclasses.replace(layer, output_dim=pixels)
        layers.append(layer)
    net = Net(config.name, backend, layers, seed=config.seed, memory_data=memory_data)
    if net.n_params != peers.count_parameters(pixels):
        raise RuntimeError(f"the net has {net.n_params:,} parameters, not "
                           f"{peers.count_parameters(pixels):,}")
    return net, make_solver(copy.deepcopy(config.solver), net)


def sample_images(count: int, bands: int) -> np.ndarray:
    """The peers' fixed random images, (count, bands, 69, 69)."""
    return peers.sample_images(count, pixels=bands * SIDE * SIDE).reshape(count, bands, SIDE, SIDE)


def step_products(batch: int, pixels: int) -> list[tuple[int, int, int, bool, bool]]:
    """The step's matrix products as InnerProduct makes them, (m, k, n, transpose a, transpose b)
    for op(a) (m, k) times op(b) (k, n): per layer the forward x W, the weight gradient x^T dpre
    and, except for the first (the data needs none), the input gradient dpre W^T."""
    products = []
    for index, (_, fan_in, fan_out, _) in enumerate(peers.layer_shapes(pixels)):
        products.append((batch, fan_in, fan_out, False, False))
        products.append((fan_in, batch, fan_out, True, False))
        if index:
            products.append((batch, fan_out, fan_in, False, True))
    return products


def step_flops(batch: int, pixels: int) -> int:
    """Floating-point operations of the step's matrix products (2 m n k each)."""
    return sum(2 * m * k * n for m, k, n, _, _ in step_products(batch, pixels))


# -- the systems ----------------------------------------------------------------------------------
def mochapy_cpu(batch: int, images: np.ndarray, compiled: bool, threads: int) -> System:
    """With the compiled loops of kernels/cpu (the default where a C compiler is found), or with
    the NumPy paths alone (what a machine without a compiler runs)."""
    try:
        backend = CPUBackend("float32", compiled=compiled, threads=threads)
    except BackendError as error:
        raise peers.PeerUnavailable(str(error)) from error
    net, solver = poster_net(backend, batch, images)

    def step() -> None:
        net.forward()
        net.backward()
        solver.update()

    note = f"NumPy {np.__version__}, {backend.loops}"
    return System("mochapy" if compiled else "mochapy-numpy", "cpu", step, lambda: None, note)


def mochapy_gpu(args: argparse.Namespace, batch: int, images: np.ndarray, graph: bool) -> System:
    import cupy

    from mochapy.backends.gpu import GPUBackend
    from mochapy.backends.gpu_step import StepRunner

    backend = GPUBackend("float32", gemm=args.gemm)
    net, solver = poster_net(backend, batch, images)
    runner = StepRunner(backend, net, solver, graph=graph)
    for _ in range(WARMUP["cuda"]):  # the runner settles its mode (graph or eager) here
        runner.step()
    backend.synchronize()
    note = f"{runner.describe()}; CuPy {cupy.__version__}, float32, no TF32"
    return System("mochapy-graph" if graph else "mochapy-eager", "cuda", runner.step,
                  backend.synchronize, note, cupy.get_default_memory_pool().total_bytes)


def torch_peer(device: str, compiled: bool, batch: int, pixels: int, threads: int) -> System:
    """PyTorch on `threads` threads; the first step (which compiles) is timed and noted."""
    torch = peers._import_torch()
    if device == "cpu":
        torch.set_num_threads(threads)
    try:
        peer = peers.build_torch_peer(device, compiled, batch, pixels=pixels)
        start = time.perf_counter()
        peer.step()
        peer.synchronize()
    except peers.PeerUnavailable:
        raise
    except Exception as error:
        if not compiled:
            raise
        raise peers.PeerUnavailable(f"torch.compile failed: {peers._first_line(error)}") from error
    threads = f"; {torch.get_num_threads()} threads" if device == "cpu" else ""
    note = f"{peer.note}{threads}; first step {time.perf_counter() - start:.1f} s"
    return System(peer.system, peer.backend, peer.step, peer.synchronize, note, peer.peak_memory)


def jax_peer(device: str, batch: int, pixels: int) -> System:
    peer = peers.build_jax_peer(batch, device=device, pixels=pixels)
    return System(peer.system, peer.backend, peer.step, peer.synchronize, peer.note,
                  peer.peak_memory)


def gemm_ceiling(batch: int, pixels: int) -> System:
    """The step's matrix products alone, into preallocated outputs: the GEMM-bound ceiling."""
    rng = np.random.default_rng(0)
    calls = []
    for m, k, n, trans_a, trans_b in step_products(batch, pixels):
        a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
        calls.append((a.T if trans_a else a, b.T if trans_b else b, np.empty((m, n), np.float32)))

    def step() -> None:
        for a, b, out in calls:
            np.matmul(a, b, out=out)

    gflop = step_flops(batch, pixels) / 1e9
    note = (f"the step's {len(calls)} matrix products alone ({gflop:.3f} GFLOP), NumPy "
            f"{np.__version__} matmul into preallocated outputs")
    return System("gemm-ceiling", "cpu", step, lambda: None, note)


def build_systems(args: argparse.Namespace, batch: int, bands: int,
                  skipped: list[dict]) -> list[System]:
    """Every system of one comparison, built and compiled (those that cannot be are skipped)."""
    pixels = bands * SIDE * SIDE
    images = sample_images(max(N_IMAGES, batch), bands)
    device = "cuda" if args.backend == "gpu" else "cpu"
    builders: list[tuple[str, Callable[[], System]]] = [
        ("mochapy", lambda: mochapy_cpu(batch, images, True, args.threads)),
        ("mochapy-numpy", lambda: mochapy_cpu(batch, images, False, args.threads)),
    ]
    if args.backend == "gpu":
        builders += [
            ("mochapy-eager", lambda: mochapy_gpu(args, batch, images, graph=False)),
            ("mochapy-graph", lambda: mochapy_gpu(args, batch, images, graph=True)),
        ]
    builders += [
        ("torch", lambda: torch_peer(device, False, batch, pixels, args.threads)),
        ("torch-compile", lambda: torch_peer(device, True, batch, pixels, args.threads)),
        ("jax", lambda: jax_peer(device, batch, pixels)),
        ("gemm-ceiling", lambda: gemm_ceiling(batch, pixels)),
    ]
    built = []
    for name, build in builders:
        if args.systems and name not in args.systems:
            continue
        print(f"building {LABELS[name]} (batch {batch}, {bands} band) ...", file=sys.stderr,
              flush=True)
        try:
            built.append(build())
        except peers.PeerUnavailable as reason:
            skipped.append({"system": name, "batch": batch, "bands": bands,
                            "reason": str(reason)})
    return built


# -- timing ---------------------------------------------------------------------------------------
def calibrate(system: System, seconds: float) -> None:
    """Warm up, then set the steps per timed run so that one run takes about `seconds`."""
    for _ in range(WARMUP["cuda" if system.backend == "cuda" else "cpu"]):
        system.step()
    system.synchronize()
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            system.step()
        system.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4 or count >= 1 << 22:
            break
        count *= 2
    system.count = max(1, round(count * seconds / elapsed))


def measure_interleaved(systems: list[System], repeats: int) -> None:
    """`repeats` rounds; each times every system once, starting one further along each round."""
    for round_index in range(repeats):
        shift = round_index % len(systems)
        for system in systems[shift:] + systems[:shift]:
            time.sleep(SETTLE_SECONDS)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(system.count):
                system.step()
            system.synchronize()
            wall = time.perf_counter() - start
            system.rates.append(system.count / wall)
            system.cores_busy.append((time.process_time() - cpu_start) / wall)


def compare(args: argparse.Namespace, batch: int, bands: int) -> dict[str, Any]:
    """One interleaved comparison: rows (with ratios), the ceiling, the skipped and the load."""
    skipped: list[dict] = []
    load_before = os.getloadavg()
    systems = build_systems(args, batch, bands, skipped)
    for system in systems:
        print(f"calibrating {LABELS[system.name]} ...", file=sys.stderr, flush=True)
        calibrate(system, args.seconds)
    print(f"timing {len(systems)} systems, {args.repeats} interleaved rounds ...",
          file=sys.stderr, flush=True)
    measure_interleaved(systems, args.repeats)
    rows = [row(system, batch, bands) for system in systems]
    add_ratios(rows, step_flops(batch, bands * SIDE * SIDE))
    result = {"batch": batch, "bands": bands, "gflop_per_step_in_gemm":
              step_flops(batch, bands * SIDE * SIDE) / 1e9, "rows": rows, "skipped": skipped,
              "load_average_before": load_before, "load_average_after": os.getloadavg()}
    del systems
    gc.collect()
    return result


def row(system: System, batch: int, bands: int) -> dict[str, Any]:
    rate = statistics.median(system.rates)
    return {"system": system.name, "label": LABELS[system.name], "backend": system.backend,
            "batch": batch, "bands": bands, "iters_per_sec": rate,
            "images_per_sec": rate * batch, "lowest": min(system.rates),
            "highest": max(system.rates), "rates": system.rates,
            "cores_busy": statistics.median(system.cores_busy),
            "steps_per_timed_run": system.count, "peak_mem_bytes": system.peak_memory(),
            "note": system.note}


def add_ratios(rows: list[dict], flops: int) -> None:
    """Each row against the poster's 200 it/s, torch.compile, the fastest peer and the GEMM
    ceiling; the ceiling row also gets its GEMM rate."""
    by_name = {r["system"]: r["iters_per_sec"] for r in rows}
    peer_rates = [r["iters_per_sec"] for r in rows
                  if not r["system"].startswith(("mochapy", "gemm"))]
    fastest = max(peer_rates, default=None)
    for r in rows:
        rate = r["iters_per_sec"]
        r["vs_poster"] = rate / POSTER_ITERS_PER_SEC
        r["vs_torch_compile"] = rate / by_name["torch-compile"] if "torch-compile" in by_name \
            else None
        r["vs_fastest_peer"] = rate / fastest if fastest else None
        r["of_gemm_ceiling"] = rate / by_name["gemm-ceiling"] if "gemm-ceiling" in by_name \
            else None
        if r["system"] == "gemm-ceiling":
            r["gemm_gflop_per_sec"] = rate * flops / 1e9


# -- the profile ----------------------------------------------------------------------------------
def profile(batch: int, bands: int, steps: int, threads: int) -> dict[str, Any]:
    """mochapy cpu's step layer by layer: each layer's forward and backward time and the part of
    it in matrix products, the solver's, and their sums by phase (loss layers: forward and
    backward together). Each entry is the median over the steps, so a step that another process
    interrupted does not count (the entries need not add up to the median step exactly)."""
    backend = CPUBackend("float32", threads=threads)
    net, solver = poster_net(backend, batch, sample_images(max(N_IMAGES, batch), bands))
    seconds: dict[tuple[str, str], float] = {}  # this step's
    current = ["", ""]

    def timed(function: Callable[..., None], layer: str, phase: str) -> Callable[..., None]:
        def run(*arguments: Any, **options: Any) -> None:
            current[:] = [layer, phase]
            start = time.perf_counter()
            function(*arguments, **options)
            key = (layer, phase)
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
        return run

    gemm = backend.gemm
    for layer in net.layers:
        name = layer.config.name
        layer.forward = timed(layer.forward, name, "forward")
        layer.backward = timed(layer.backward, name, "backward")
    solver.update = timed(solver.update, "(solver)", "solver")

    def gemm_timed(*arguments: Any, **options: Any) -> None:
        start = time.perf_counter()
        gemm(*arguments, **options)
        key = (current[0], f"{current[1]} gemm")
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start

    backend.gemm = gemm_timed
    for _ in range(WARMUP["cpu"]):
        net.forward()
        net.backward()
        solver.update()
    per_step: list[dict[tuple[str, str], float]] = []
    step_seconds = []
    for _ in range(steps):
        seconds.clear()
        start = time.perf_counter()
        net.forward()
        net.backward()
        solver.update()
        step_seconds.append(time.perf_counter() - start)
        per_step.append(dict(seconds))
    total = statistics.median(step_seconds) * 1e3

    def ms(layer: str, phase: str) -> float:
        return statistics.median(step.get((layer, phase), 0.0) for step in per_step) * 1e3

    layers = []
    for layer in net.layers:
        name = layer.config.name
        layers.append({"layer": name, "type": layer.config.type_name,
                       "loss": layer.config.has_loss,
                       "forward_ms": ms(name, "forward"), "backward_ms": ms(name, "backward"),
                       "gemm_ms": ms(name, "forward gemm") + ms(name, "backward gemm")})
    phases = {
        "forward": sum(r["forward_ms"] for r in layers if not r["loss"]),
        "backward": sum(r["backward_ms"] for r in layers if not r["loss"]),
        "loss": sum(r["forward_ms"] + r["backward_ms"] for r in layers if r["loss"]),
        "solver": ms("(solver)", "solver"),
    }
    phases["other (net's Python, gradient sums of shared blobs)"] = total - sum(phases.values())
    return {"batch": batch, "bands": bands, "steps": steps, "statistic": "median",
            "step_ms": total, "gemm_ms": sum(r["gemm_ms"] for r in layers), "layers": layers,
            "phases": phases, "backend": backend.describe()}


def profile_table(report: dict[str, Any]) -> str:
    step = report["step_ms"]
    lines = [f"profile of one mochapy {report['backend']} step, batch {report['batch']}, "
             f"{report['bands']} band (median of {report['steps']} steps): {step:.2f} ms, of which "
             f"matrix products {report['gemm_ms']:.2f} ms ({report['gemm_ms'] / step:.0%})",
             f"{'layer':<16} {'type':<18} {'forward ms':>10} {'backward ms':>11} "
             f"{'in GEMM ms':>10} {'share':>6}"]
    lines.append("-" * len(lines[-1]))
    for r in report["layers"]:
        both = r["forward_ms"] + r["backward_ms"]
        lines.append(f"{r['layer']:<16} {r['type']:<18} {r['forward_ms']:>10.3f} "
                     f"{r['backward_ms']:>11.3f} {r['gemm_ms']:>10.3f} {both / step:>6.1%}")
    lines += ["", f"{'phase':<52} {'ms':>7} {'share':>6}"]
    for phase, value in report["phases"].items():
        lines.append(f"{phase:<52} {value:>7.3f} {value / step:>6.1%}")
    return "\n".join(lines)


# -- the report -----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """The CPU as lscpu names it (model, cores, caches) and the software versions."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle
                     if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    keep = ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache",
            "Hypervisor vendor")
    details = {key.strip(): value.strip() for key, _, value in
               (line.partition(":") for line in lscpu.splitlines()) if key.strip() in keep}
    return {"cpu": model, "cores": os.cpu_count(), "lscpu": details,
            "python": platform.python_version(), "numpy": np.__version__}


def gpu_name() -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def comparison_table(result: dict[str, Any]) -> str:
    header = (f"{'system':<24} {'backend':<7} {'it/s':>8} {'lowest-highest':>15} {'images/s':>9} "
              f"{'x torch.compile':>15} {'of GEMM ceiling':>15} {'x poster':>8} {'cores':>5}")
    lines = [f"batch {result['batch']}, {result['bands']} band "
             f"({result['gflop_per_step_in_gemm']:.3f} GFLOP of GEMM per step); load average "
             f"{result['load_average_before'][0]:.2f} before, "
             f"{result['load_average_after'][0]:.2f} after", header, "-" * len(header)]

    def ratio(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    for r in table_order(result["rows"]):
        spread = f"{r['lowest']:.1f}-{r['highest']:.1f}"
        lines.append(f"{r['label']:<24} {r['backend']:<7} {r['iters_per_sec']:>8.1f} "
                     f"{spread:>15} {r['images_per_sec']:>9.0f} "
                     f"{ratio(r['vs_torch_compile'], '.2f'):>15} "
                     f"{ratio(r['of_gemm_ceiling'], '.0%'):>15} {r['vs_poster']:>8.2f} "
                     f"{ratio(r.get('cores_busy'), '.1f'):>5}")
    lines.append("")
    for r in table_order(result["rows"]):
        rate = f" ({r['gemm_gflop_per_sec']:.0f} GFLOP/s)" if "gemm_gflop_per_sec" in r else ""
        lines.append(f"{r['label']}: {r['note']}{rate}; median of {len(r['rates'])} rounds x "
                     f"{r['steps_per_timed_run']} steps")
    lines += [f"skipped {s['system']}: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines)


def table_order(rows: list[dict]) -> list[dict]:
    """Rows in the order of LABELS: mochapy first, then the peers, then the ceiling."""
    order = list(LABELS)
    return sorted(rows, key=lambda r: order.index(r["system"]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["cpu", "gpu"], default=None,
                        help="gpu: every row on the GPU (plus mochapy cpu); default: gpu if usable")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--bands", type=int, default=1, help="images of 69 x 69 x bands")
    parser.add_argument("--sweep", action="store_true",
                        help="batches 1, 10, 100, 1000 with 1 band, then batch 100 with 3 bands")
    parser.add_argument("--profile", action="store_true",
                        help="first print mochapy's step layer by layer and phase by phase")
    parser.add_argument("--profile-only", action="store_true", help="the profile, no comparison")
    parser.add_argument("--systems", nargs="+", choices=list(LABELS), default=None,
                        help="time only these rows (default: all)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads of every system (BLAS, compiled loops, PyTorch, XLA); "
                             "default: the usable cores")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="length of each system's timed run in each round")
    parser.add_argument("--gemm", default="auto",
                        choices=["auto", "cublas", "tiled", "cutensor", "cupy"],
                        help="mochapy's GPU matrix-product engine")
    args = parser.parse_args(argv)
    if args.backend is None:
        args.backend = "gpu" if gpu_available() else "cpu"
    if min(args.batch, args.bands, args.repeats, args.threads) < 1 or args.seconds <= 0:
        parser.error("--batch, --bands, --repeats and --threads must be positive, --seconds > 0")
    if args.backend == "gpu" and not gpu_available():
        parser.error("--backend gpu needs CuPy and a CUDA device")
    if args.json and args.json.exists() and not args.force:
        parser.error(f"{args.json} exists: pass --force to replace it")
    args.profile = args.profile or args.profile_only
    return args


def limit_threads(threads: int) -> None:
    """One thread count for every system of the process: NumPy's BLAS here, XLA before JAX is
    imported (one thread, or all cores: its CPU client has no other count), the rest as built."""
    threadpool_limits(threads, user_api="blas")
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    report: dict[str, Any] = {
        "machine": machine(), "device": gpu_name() if args.backend == "gpu" else "CPU only",
        "settings": {"repeats": args.repeats, "seconds": args.seconds, "gemm": args.gemm,
                     "backend": args.backend, "threads": args.threads, "interleaved": True},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_before": os.getloadavg(), "comparisons": [],
    }

    def save() -> None:  # after every comparison, so a run cut short still leaves its results
        if args.json:
            write_text_atomically(str(args.json), json.dumps(report, indent=2) + "\n")

    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; device: "
          f"{report['device']}; {args.threads} threads")
    if args.profile:
        report["profile"] = profile(args.batch, args.bands, max(20, 10 * args.repeats),
                                    args.threads)
        print(profile_table(report["profile"]) + "\n", flush=True)
        save()
    if not args.profile_only:
        for batch, bands in SWEEP if args.sweep else ((args.batch, args.bands),):
            report["comparisons"].append(compare(args, batch, bands))
            report["load_average_after"] = os.getloadavg()
            print(comparison_table(report["comparisons"][-1]) + "\n", flush=True)
            save()
    report["load_average_after"] = os.getloadavg()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
