"""Training speed of the poster's galaxy VAE: mochapy (CPU; GPU eager and GPU CUDA graph) beside
PyTorch (eager and torch.compile) and JAX (jit), on the same machine in the same run.

The net is examples/galaxy_vae_poster.yaml's (69x69x1, 2x128 ReLU encoder and decoder, z = 8, Adam,
1,874,114 parameters) with a MemoryData layer over a fixed set of images instead of the built-in
data, so that data generation is not timed; on the GPU the images stay on the device and each
step gathers its shuffled batch there. A step is forward, backward and the solver update. Rates
are the median of `--repeats` timed runs after an untimed warm-up, each run bracketed by device
synchronisation. Systems that are missing here are listed as skipped, with the reason.

    python benchmarks/iters_per_sec.py [--backend cpu|gpu] [--batch 100] [--json F]
                                       [--repeats 5] [--seconds S] [--gemm auto|cublas|...]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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
EXPECTED_PARAMETERS = 1_874_114
NET_YAML = REPO / "examples" / "galaxy_vae_poster.yaml"
N_IMAGES = 1000  # the resident dataset the batches are drawn from
WARMUP = {"cpu": 3, "cuda": 50}
LABELS = {
    "mochapy": "mochapy cpu", "mochapy-numpy": "mochapy cpu, NumPy",
    "mochapy-eager": "mochapy gpu eager", "mochapy-graph": "mochapy gpu graph",
    "torch": "PyTorch eager",
    "torch-compile": "torch.compile", "jax": "JAX jit",
}


# -- the net --------------------------------------------------------------------------------------
def poster_net(backend: Any, batch: int, images: np.ndarray) -> tuple[Net, Any]:
    """The YAML's net and solver with its HDF5Data layer replaced by MemoryData over `images`."""
    config = load_config(str(NET_YAML))
    layers, memory_data = [], {}
    for layer in config.layers:
        if layer.type_name == "HDF5Data":
            layer = MemoryDataConfig(name=layer.name, tops=layer.tops, batch_size=batch,
                                     shuffle=True)
            memory_data[layer.name] = {layer.tops[0]: images}
        layers.append(layer)
    net = Net(config.name, backend, layers, seed=config.seed, memory_data=memory_data)
    if net.n_params != EXPECTED_PARAMETERS:
        raise RuntimeError(f"the net has {net.n_params:,} parameters, not {EXPECTED_PARAMETERS:,}")
    return net, make_solver(copy.deepcopy(config.solver), net)


def sample_images(count: int) -> np.ndarray:
    """The peers' fixed random images, (count, 1, 69, 69)."""
    return peers.sample_images(count).reshape(count, 1, 69, 69)


# -- timing ---------------------------------------------------------------------------------------
def median_rate(
    step: Callable[[], None], synchronize: Callable[[], None], warmup: int, seconds: float,
    repeats: int,
) -> tuple[float, int]:
    """(median steps per second, steps per timed run): runs sized to take about `seconds`."""
    for _ in range(warmup):
        step()
    synchronize()
    count, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(count):
            step()
        synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4 or count >= 1 << 22:
            break
        count *= 2
    count = max(count, round(count * seconds / elapsed))  # never fewer than calibrated
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            step()
        synchronize()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates), count


def row(system: str, backend: str, batch: int, rate: float, peak: int | None, note: str) -> dict:
    return {"system": system, "backend": backend, "batch": batch, "iters_per_sec": rate,
            "images_per_sec": rate * batch, "peak_mem_bytes": peak, "note": note}


def time_mochapy_cpu(args: argparse.Namespace, images: np.ndarray, compiled: bool) -> dict:
    """With the compiled loops of kernels/cpu (the default where a C compiler is found), or with
    the NumPy paths alone (what a machine without a compiler runs)."""
    try:
        backend = CPUBackend("float32", compiled=compiled)
    except BackendError as error:
        raise peers.PeerUnavailable(str(error)) from error
    net, solver = poster_net(backend, args.batch, images)

    def step() -> None:
        net.forward()
        net.backward()
        solver.update()

    rate, count = median_rate(step, lambda: None, WARMUP["cpu"], args.seconds, args.repeats)
    note = (f"NumPy {np.__version__}, {backend.loops}, {os.cpu_count()} cores; median of "
            f"{args.repeats} x {count} steps after {WARMUP['cpu']} warm-up")
    return row("mochapy" if compiled else "mochapy-numpy", "cpu", args.batch, rate, None, note)


def time_mochapy_gpu(args: argparse.Namespace, images: np.ndarray, graph: bool) -> dict:
    import cupy

    from mochapy.backends.gpu import GPUBackend
    from mochapy.backends.gpu_step import StepRunner

    backend = GPUBackend("float32", gemm=args.gemm)
    net, solver = poster_net(backend, args.batch, images)
    runner = StepRunner(backend, net, solver, graph=graph)
    rate, count = median_rate(runner.step, backend.synchronize, WARMUP["cuda"], args.seconds,
                              args.repeats)
    peak = cupy.get_default_memory_pool().total_bytes()
    note = (f"{runner.describe()}; CuPy {cupy.__version__}, float32, no TF32; median of "
            f"{args.repeats} x {count} steps after {WARMUP['cuda']} warm-up")
    result = row("mochapy-graph" if graph else "mochapy-eager", "cuda", args.batch, rate, peak,
                 note)
    result["mode"] = runner.mode
    del runner, net, solver
    gc.collect()
    cupy.get_default_memory_pool().free_all_blocks()
    return result


# -- the run --------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle
                     if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "node": platform.node(),
            "python": platform.python_version(), "numpy": np.__version__}


def gpu_name() -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def systems(args: argparse.Namespace, images: np.ndarray) -> list[tuple[str, Callable[[], dict]]]:
    """(label, timer) for every row of this run, in the order they are timed."""
    rows: list[tuple[str, Callable[[], dict]]] = [
        (LABELS["mochapy"], lambda: time_mochapy_cpu(args, images, compiled=True)),
        (LABELS["mochapy-numpy"], lambda: time_mochapy_cpu(args, images, compiled=False)),
    ]
    device = "cuda" if args.backend == "gpu" else "cpu"
    if args.backend == "gpu":
        rows += [
            (LABELS["mochapy-eager"], lambda: time_mochapy_gpu(args, images, graph=False)),
            (LABELS["mochapy-graph"], lambda: time_mochapy_gpu(args, images, graph=True)),
        ]
    rows += [  # torch.compile last: its compilation is the slowest part of a run
        (LABELS["torch"], lambda: peers.time_torch(device, False, args.batch,
                                                   repeats=args.repeats)),
        (LABELS["jax"], lambda: peers.time_jax(args.batch, repeats=args.repeats, device=device)),
        (LABELS["torch-compile"], lambda: peers.time_torch(device, True, args.batch,
                                                           repeats=args.repeats)),
    ]
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Each row's speed relative to the poster's 200 it/s, to PyTorch eager on the same device
    (the engine issue's yardstick) and to the fastest peer framework."""
    peer_rates = [r["iters_per_sec"] for r in rows if not r["system"].startswith("mochapy")]
    fastest = max(peer_rates, default=None)
    eager = next((r["iters_per_sec"] for r in rows if r["system"] == "torch"), None)
    for r in rows:
        r["vs_poster"] = r["iters_per_sec"] / POSTER_ITERS_PER_SEC
        r["vs_torch_eager"] = r["iters_per_sec"] / eager if eager else None
        r["vs_fastest_peer"] = r["iters_per_sec"] / fastest if fastest else None


def table_order(rows: list[dict]) -> list[dict]:
    """Rows in the order of LABELS: mochapy first, then the peers."""
    order = list(LABELS)
    return sorted(rows, key=lambda r: order.index(r["system"]) if r["system"] in order else 99)


def table(rows: list[dict], skipped: list[dict], info: dict[str, Any]) -> str:
    header = (f"{'system':<20} {'backend':<7} {'it/s':>10} {'images/s':>11} {'peak GPU MB':>11} "
              f"{'x poster':>9} {'x PyTorch eager':>15} {'x fastest peer':>14}")
    lines = [f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; "
             f"device: {info['device']}; batch {info['batch']}", header, "-" * len(header)]
    for r in rows:
        peak = "-" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:.0f}"
        versus = "-" if r["vs_fastest_peer"] is None else f"{r['vs_fastest_peer']:.2f}"
        eager = "-" if r["vs_torch_eager"] is None else f"{r['vs_torch_eager']:.2f}"
        lines.append(f"{LABELS.get(r['system'], r['system']):<20} {r['backend']:<7} "
                     f"{r['iters_per_sec']:>10.1f} {r['images_per_sec']:>11.0f} {peak:>11} "
                     f"{r['vs_poster']:>9.2f} {eager:>15} {versus:>14}")
    lines.append("")
    lines += [f"{LABELS.get(r['system'], r['system'])}: {r['note']}" for r in rows]
    lines += [f"skipped {s['system']}: {s['reason']}" for s in skipped]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["cpu", "gpu"], default=None,
                        help="gpu: every row on the GPU (plus mochapy cpu); default: gpu if usable")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="length of each timed mochapy run (peers use their own step counts)")
    parser.add_argument("--gemm", default="auto",
                        choices=["auto", "cublas", "tiled", "cutensor", "cupy"],
                        help="mochapy's GPU matrix-product engine")
    args = parser.parse_args(argv)
    if args.backend is None:
        args.backend = "gpu" if gpu_available() else "cpu"
    if args.batch < 1 or args.repeats < 1 or args.seconds <= 0:
        parser.error("--batch and --repeats must be positive, --seconds > 0")
    if args.backend == "gpu" and not gpu_available():
        parser.error("--backend gpu needs CuPy and a CUDA device")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = sample_images(max(N_IMAGES, args.batch))
    info = {"machine": machine(), "device": gpu_name() if args.backend == "gpu" else "CPU only",
            "batch": args.batch}
    settings = {"repeats": args.repeats, "seconds": args.seconds, "gemm": args.gemm,
                "backend": args.backend}
    rows: list[dict] = []
    skipped: list[dict] = []
    for label, timer in systems(args, images):
        print(f"timing {label} ...", file=sys.stderr, flush=True)
        try:
            rows = table_order([*rows, timer()])
        except peers.PeerUnavailable as reason:
            skipped.append({"system": label, "reason": str(reason)})
        add_ratios(rows)
        if args.json:  # after every row, so a run cut short still leaves its results
            report = {**info, "settings": settings, "rows": rows, "skipped": skipped}
            write_text_atomically(str(args.json), json.dumps(report, indent=2) + "\n")
    print(table(rows, skipped, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
