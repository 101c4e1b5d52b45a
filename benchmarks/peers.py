"""Peer systems for the speed benchmark: the poster's galaxy VAE training step in PyTorch and JAX.

The same net, loss, initial weights and Adam settings as our engine, written the way a user of
each framework would write it, so that ``iters_per_sec.py`` can time them side by side. PyTorch
and JAX are imported lazily: neither is a dependency of mochapy, and a missing framework or
device raises ``PeerUnavailable`` instead of failing the whole benchmark.

Run one row alone: ``python benchmarks/peers.py --system torch --device cpu --batch 100``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

IMAGE_PIXELS = 69 * 69
HIDDEN = 128
LATENT = 8
LEARNING_RATE = 1e-3
BETA1 = 0.9
BETA2 = 0.999
ADAM_EPSILON = 1e-8
WEIGHT_DECAY = 1e-4
SD_HEAD_BIAS = -1.0
LOG_2PI = math.log(2.0 * math.pi)



def layer_shapes(pixels: int = IMAGE_PIXELS) -> tuple[tuple[str, int, int, bool], ...]:
    """(name, fan_in, fan_out, is_sd_head) for every InnerProduct layer, in forward order, for
    images of `pixels` values (69 x 69 x bands)."""
    return (
        ("enc1", pixels, HIDDEN, False),
        ("enc2", HIDDEN, HIDDEN, False),
        ("z_mu", HIDDEN, LATENT, False),
        ("z_sd", HIDDEN, LATENT, True),
        ("dec1", LATENT, HIDDEN, False),
        ("dec2", HIDDEN, HIDDEN, False),
        ("x_mu", HIDDEN, pixels, False),
        ("x_sd", HIDDEN, pixels, True),
    )


def count_parameters(pixels: int = IMAGE_PIXELS) -> int:
    """Weights and biases of the net for images of `pixels` values (1,874,114 for 69 x 69)."""
    return sum((fan_in + 1) * fan_out for _, fan_in, fan_out, _ in layer_shapes(pixels))


# Step counts that keep one measurement to a few seconds on 2 CPU cores, and long enough on a GPU
# for launch overhead (not timer resolution) to dominate.
DEFAULT_WARMUP = {"cpu": 5, "cuda": 50}
DEFAULT_ITERS = {"cpu": 30, "cuda": 1000}
# CUDA graphs remove the per-kernel launch cost that dominates a step this small (a few hundred
# MFLOP), so reduce-overhead beats max-autotune-no-cudagraphs there; a CPU has no graphs to replay.
DEFAULT_COMPILE_MODE = {"cpu": "default", "cuda": "reduce-overhead"}
CUDA_GRAPH_MODES = {"reduce-overhead", "max-autotune"}


class PeerUnavailable(RuntimeError):
    """The framework, device or compiler a peer needs is not usable here; the reason says why."""


@dataclass(frozen=True)
class Peer:
    """One framework's training step on a fixed device-resident batch, ready to be timed."""

    system: str
    backend: str
    batch: int
    parameter_count: int
    note: str
    step: Callable[[], None]
    synchronize: Callable[[], None]
    losses: Callable[[np.ndarray], tuple[float, float]]
    peak_memory: Callable[[], int | None]


def init_parameters(seed: int = 0, pixels: int = IMAGE_PIXELS) -> dict[str, np.ndarray]:
    """The shared initial weights in Mocha's layout: NAME.weight (fan_in, fan_out), NAME.bias.

    Xavier as Mocha defines it (uniform in ±sqrt(3 / fan_in)), biases 0; the sd heads start with
    weights 0 and bias -1 so every sigma starts at exp(-1).
    """
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, fan_in, fan_out, is_sd_head in layer_shapes(pixels):
        if is_sd_head:
            weight = np.zeros((fan_in, fan_out), dtype=np.float32)
            bias = np.full(fan_out, SD_HEAD_BIAS, dtype=np.float32)
        else:
            scale = math.sqrt(3.0 / fan_in)
            weight = rng.uniform(-scale, scale, (fan_in, fan_out)).astype(np.float32)
            bias = np.zeros(fan_out, dtype=np.float32)
        params[f"{name}.weight"] = weight
        params[f"{name}.bias"] = bias
    return params


def sample_images(batch: int, seed: int = 0, pixels: int = IMAGE_PIXELS) -> np.ndarray:
    """A fixed batch of random positive flattened images, shape (batch, pixels), float32."""
    rng = np.random.default_rng(seed + 1)
    return rng.uniform(0.01, 1.0, (batch, pixels)).astype(np.float32)


def reference_loss(
    params: dict[str, np.ndarray], images: np.ndarray, eps: np.ndarray
) -> tuple[float, float]:
    """(GaussianReconLoss, GaussianKLLoss) of the net, in float64, written literally from the spec.

    Independent of the peers' own formulation (which works with log sigma directly), so it checks
    them, and mochapy, for exactness.
    """
    p = {name: value.astype(np.float64) for name, value in params.items()}
    x = images.astype(np.float64).reshape(images.shape[0], -1)
    n = x.shape[0]

    def inner_product(name: str, h: np.ndarray) -> np.ndarray:
        return h @ p[f"{name}.weight"] + p[f"{name}.bias"]

    def relu(h: np.ndarray) -> np.ndarray:
        return np.maximum(h, 0.0)

    h = relu(inner_product("enc2", relu(inner_product("enc1", x))))
    z_mu = inner_product("z_mu", h)
    z_sd = np.exp(inner_product("z_sd", h))
    z = z_mu + z_sd * eps.astype(np.float64)
    g = relu(inner_product("dec2", relu(inner_product("dec1", z))))
    x_mu = inner_product("x_mu", g)
    x_sd = np.exp(inner_product("x_sd", g))
    recon = 0.5 / n * np.sum(np.log(2 * np.pi) + 2 * np.log(x_sd) + (x - x_mu) ** 2 / x_sd**2)
    kl = 0.5 / n * np.sum(z_mu**2 + z_sd**2 - 2 * np.log(z_sd) - 1)
    return float(recon), float(kl)


def _vae_losses(
    linear: Callable[[str, Any], Any],
    relu: Callable[[Any], Any],
    exp: Callable[[Any], Any],
    images: Any,
    eps: Any,
) -> tuple[Any, Any]:
    """(recon, kl) for any array library; the sd heads' pre-activations serve as log sigma."""
    h = relu(linear("enc2", relu(linear("enc1", images))))
    z_mu = linear("z_mu", h)
    z_log_sd = linear("z_sd", h)
    z = z_mu + exp(z_log_sd) * eps
    g = relu(linear("dec2", relu(linear("dec1", z))))
    x_mu = linear("x_mu", g)
    x_log_sd = linear("x_sd", g)
    n = images.shape[0]
    recon = (0.5 / n) * (LOG_2PI + 2 * x_log_sd + (images - x_mu) ** 2 * exp(-2 * x_log_sd)).sum()
    kl = (0.5 / n) * (z_mu**2 + exp(2 * z_log_sd) - 2 * z_log_sd - 1).sum()
    return recon, kl


def _check_parameter_count(count: int, system: str, pixels: int) -> None:
    if count != count_parameters(pixels):
        raise RuntimeError(
            f"{system} net has {count:,} parameters, expected {count_parameters(pixels):,}"
        )


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise PeerUnavailable(f"PyTorch is not installed ({error})") from error
    return torch


def _import_jax() -> tuple[Any, Any]:
    # Left to itself JAX grabs 75% of the GPU at start-up, starving the systems timed after it in
    # the same process; growing on demand costs nothing once the step is warm.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as error:
        raise PeerUnavailable(f"JAX is not installed ({error})") from error
    if _xla_single_threaded():
        _start_cpu_client_on_one_core(jax)
    return jax, jnp


def _xla_single_threaded() -> bool:
    return "--xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "")


def _start_cpu_client_on_one_core(jax: Any) -> None:
    """XLA's CPU runtime runs its work on a thread pool sized to the cores, whatever
    --xla_cpu_multi_thread_eigen says (measured: 1.7 cores busy with the flag set). The pool's
    threads are made with the CPU client, and inherit the affinity of the thread that makes it:
    make the client while this thread may run on one core only, then give the core mask back.
    Libraries loaded before (NumPy's BLAS) keep their threads; nothing else is pinned."""
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        jax.devices("cpu")
    finally:
        os.sched_setaffinity(0, cores)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def build_torch_peer(
    device: str = "cpu",
    compiled: bool = False,
    batch: int = 100,
    seed: int = 0,
    compile_mode: str | None = None,
    pixels: int = IMAGE_PIXELS,
) -> Peer:
    """The PyTorch peer: nn.Linear layers, torch.optim.Adam, eps drawn on the device each step.

    Weight decay goes only to the weights (a param group), as Mocha's regu_coef does. Compiled
    means the loss (forward and backward) goes through torch.compile. Adam is the fused kernel,
    except compiled on CUDA, where the foreach, capturable step is compiled as well so that CUDA
    graphs hold the whole update instead of paying optimizer.step's Python cost each step. (On
    CPU, eager fused Adam measured faster than a compiled step and compiles in no time.)
    """
    if device not in DEFAULT_COMPILE_MODE:
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    torch = _import_torch()
    if device == "cuda" and not torch.cuda.is_available():
        raise PeerUnavailable("PyTorch sees no CUDA device")
    torch.manual_seed(seed)
    layers = torch.nn.ModuleDict(
        {
            name: torch.nn.Linear(inputs, outputs, device=device)
            for name, inputs, outputs, _ in layer_shapes(pixels)
        }
    )
    with torch.no_grad():
        for name, value in init_parameters(seed, pixels).items():
            layer_name, kind = name.split(".")
            tensor = torch.from_numpy(value.T.copy() if kind == "weight" else value)
            getattr(layers[layer_name], kind).copy_(tensor)
    parameter_count = sum(parameter.numel() for parameter in layers.parameters())
    _check_parameter_count(parameter_count, "PyTorch", pixels)
    images = torch.from_numpy(sample_images(batch, seed, pixels)).to(device)

    def linear(name: str, h: Any) -> Any:
        return layers[name](h)

    def loss_with_fresh_eps() -> Any:
        eps = torch.randn(batch, LATENT, device=images.device)
        recon, kl = _vae_losses(linear, torch.relu, torch.exp, images, eps)
        return recon + kl

    groups = [
        {"params": [layer.weight for layer in layers.values()], "weight_decay": WEIGHT_DECAY},
        {"params": [layer.bias for layer in layers.values()], "weight_decay": 0.0},
    ]
    compiles_update = compiled and device == "cuda"
    implementation = {"foreach": True, "capturable": True} if compiles_update else {"fused": True}
    optimizer = torch.optim.Adam(
        groups, lr=LEARNING_RATE, betas=(BETA1, BETA2), eps=ADAM_EPSILON, **implementation
    )
    forward, update = loss_with_fresh_eps, optimizer.step
    mode = compile_mode or DEFAULT_COMPILE_MODE[device]
    if compiled:  # static shapes: a benchmark building several batch sizes compiles each anew
        forward = torch.compile(forward, mode=mode, dynamic=False)
    if compiles_update:
        update = torch.compile(update, mode=mode)
    marks_graph_steps = compiled and device == "cuda" and mode in CUDA_GRAPH_MODES

    def step() -> None:
        if marks_graph_steps:
            torch.compiler.cudagraph_mark_step_begin()
        optimizer.zero_grad(set_to_none=True)
        forward().backward()
        update()

    def losses(eps: np.ndarray) -> tuple[float, float]:
        with torch.no_grad():
            eps_tensor = torch.from_numpy(np.asarray(eps, dtype=np.float32)).to(device)
            recon, kl = _vae_losses(linear, torch.relu, torch.exp, images, eps_tensor)
        return float(recon), float(kl)

    on_cuda = device == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
        where = torch.cuda.get_device_name()
    else:
        where = "CPU"
    adam = "foreach Adam, step compiled" if compiles_update else "fused Adam"
    note = (
        f"PyTorch {torch.__version__} on {where}, {adam}, "
        f"float32 matmul precision {torch.get_float32_matmul_precision()}"
        + (f", torch.compile mode={mode}" if compiled else "")
    )
    return Peer(
        system="torch-compile" if compiled else "torch",
        backend=device,
        batch=batch,
        parameter_count=parameter_count,
        note=note,
        step=step,
        synchronize=torch.cuda.synchronize if on_cuda else lambda: None,
        losses=losses,
        peak_memory=torch.cuda.max_memory_allocated if on_cuda else lambda: None,
    )


def build_jax_peer(
    batch: int = 100, seed: int = 0, device: str | None = None, pixels: int = IMAGE_PIXELS
) -> Peer:
    """The JAX peer: one jax.jit of value_and_grad plus a hand-written Adam, buffers donated.

    ``device`` None takes jax.devices()[0] (the GPU when there is one); 'cpu' or 'cuda' pick one.
    """
    jax, jnp = _import_jax()
    try:
        target = (
            jax.devices()[0]
            if device is None
            else jax.devices("gpu" if device == "cuda" else device)[0]
        )
    except RuntimeError as error:
        raise PeerUnavailable(f"JAX has no {device} device ({_first_line(error)})") from error
    params = {
        name: jax.device_put(value, target)
        for name, value in init_parameters(seed, pixels).items()
    }
    parameter_count = sum(int(value.size) for value in params.values())
    _check_parameter_count(parameter_count, "JAX", pixels)
    images = jax.device_put(sample_images(batch, seed, pixels), target)

    def linear_with(weights: dict[str, Any]) -> Callable[[str, Any], Any]:
        return lambda name, h: h @ weights[f"{name}.weight"] + weights[f"{name}.bias"]

    def total_loss(weights: dict[str, Any], batch_images: Any, key: Any) -> Any:
        eps = jax.random.normal(key, (batch, LATENT), jnp.float32)
        recon, kl = _vae_losses(linear_with(weights), jax.nn.relu, jnp.exp, batch_images, eps)
        return recon + kl

    def train_step(state: tuple[Any, ...], batch_images: Any) -> tuple[tuple[Any, ...], Any]:
        weights, first, second, count, key = state
        key, eps_key = jax.random.split(key)
        loss, grads = jax.value_and_grad(total_loss)(weights, batch_images, eps_key)
        count = count + 1
        first_correction = 1 - BETA1**count
        second_correction = 1 - BETA2**count
        new_weights, new_first, new_second = {}, {}, {}
        for name, weight in weights.items():
            grad = grads[name] + WEIGHT_DECAY * weight if name.endswith(".weight") else grads[name]
            new_first[name] = BETA1 * first[name] + (1 - BETA1) * grad
            new_second[name] = BETA2 * second[name] + (1 - BETA2) * grad * grad
            new_weights[name] = weight - LEARNING_RATE * (new_first[name] / first_correction) / (
                jnp.sqrt(new_second[name] / second_correction) + ADAM_EPSILON
            )
        return (new_weights, new_first, new_second, count, key), loss

    jitted_step = jax.jit(train_step, donate_argnums=0)
    state = [
        (
            params,
            {name: jnp.zeros_like(value) for name, value in params.items()},
            {name: jnp.zeros_like(value) for name, value in params.items()},
            jax.device_put(jnp.zeros((), jnp.float32), target),
            jax.device_put(jax.random.PRNGKey(seed), target),
        )
    ]

    def step() -> None:
        state[0], _ = jitted_step(state[0], images)

    def synchronize() -> None:
        jax.block_until_ready(state[0])

    def losses(eps: np.ndarray) -> tuple[float, float]:
        eps_array = jax.device_put(np.asarray(eps, dtype=np.float32), target)
        recon, kl = _vae_losses(linear_with(state[0][0]), jax.nn.relu, jnp.exp, images, eps_array)
        return float(recon), float(kl)

    def peak_memory() -> int | None:
        stats = target.memory_stats()
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    backend = "cuda" if target.platform in ("gpu", "cuda") else target.platform
    precision = jax.config.jax_default_matmul_precision or (
        "default (TF32 on Ampere and later)" if backend == "cuda" else "default"
    )
    threads = (f", XLA on {'one core' if _xla_single_threaded() else 'all CPU cores'}"
               if backend == "cpu" else "")
    where = target.device_kind
    return Peer(
        system="jax",
        backend=backend,
        batch=batch,
        parameter_count=parameter_count,
        note=f"JAX {jax.__version__} on {where}, matmul precision {precision}{threads}",
        step=step,
        synchronize=synchronize,
        losses=losses,
        peak_memory=peak_memory,
    )


def _measure(peer: Peer, warmup: int, iters: int, repeats: int) -> dict[str, Any]:
    """Median rate over ``repeats`` runs of ``iters`` steps, after ``warmup`` untimed steps."""
    for _ in range(warmup):
        peer.step()
    peer.synchronize()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            peer.step()
        peer.synchronize()
        rates.append(iters / (time.perf_counter() - start))
    rate = statistics.median(rates)
    return {
        "system": peer.system,
        "backend": peer.backend,
        "batch": peer.batch,
        "iters_per_sec": rate,
        "images_per_sec": rate * peer.batch,
        "peak_mem_bytes": peer.peak_memory(),
        "note": f"{peer.note}; median of {repeats} x {iters} steps after {warmup} warm-up",
    }


def time_torch(
    device: str = "cpu",
    compiled: bool = False,
    batch: int = 100,
    warmup: int | None = None,
    iters: int | None = None,
    repeats: int = 5,
    threads: int | None = None,
    compile_mode: str | None = None,
) -> dict[str, Any]:
    """Time PyTorch's training step, eager or torch.compile'd, on 'cpu' or 'cuda'.

    On CPU, ``threads`` (default: every core) sets torch's intra-op threads for the run only.
    A torch.compile that fails (no C++ compiler, no Triton, ...) raises PeerUnavailable.
    """
    torch = _import_torch()
    previous_threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        peer = build_torch_peer(device, compiled, batch, compile_mode=compile_mode)
        try:
            start = time.perf_counter()
            peer.step()
            peer.synchronize()
            first_step_seconds = time.perf_counter() - start
            result = _measure(
                peer,
                DEFAULT_WARMUP[device] if warmup is None else warmup,
                DEFAULT_ITERS[device] if iters is None else iters,
                repeats,
            )
        except Exception as error:
            if not compiled:
                raise
            raise PeerUnavailable(f"torch.compile failed: {_first_line(error)}") from error
        if device == "cpu":
            result["note"] += f"; {torch.get_num_threads()} threads"
        result["note"] += f"; first step (compiles if compiled) {first_step_seconds:.1f} s"
        return result
    finally:
        torch.set_num_threads(previous_threads)


def time_jax(
    batch: int = 100,
    warmup: int | None = None,
    iters: int | None = None,
    repeats: int = 5,
    device: str | None = None,
) -> dict[str, Any]:
    """Time JAX's jitted training step on jax.devices()[0], or on ``device`` ('cpu'/'cuda')."""
    peer = build_jax_peer(batch, device=device)
    kind = "cpu" if peer.backend == "cpu" else "cuda"
    return _measure(
        peer,
        DEFAULT_WARMUP[kind] if warmup is None else warmup,
        DEFAULT_ITERS[kind] if iters is None else iters,
        repeats,
    )


def main(argv: list[str] | None = None) -> int:
    """Print one benchmark row as JSON; an unavailable peer prints ``error: reason`` and exits 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=["torch", "torch-compile", "jax"], default="torch")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="default: cpu for torch, jax.devices()[0] for jax",
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode")
    args = parser.parse_args(argv)
    try:
        if args.system == "jax":
            row = time_jax(args.batch, args.warmup, args.iters, args.repeats, device=args.device)
        else:
            row = time_torch(
                args.device or "cpu",
                args.system == "torch-compile",
                args.batch,
                args.warmup,
                args.iters,
                args.repeats,
                args.threads,
                args.compile_mode,
            )
    except PeerUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
