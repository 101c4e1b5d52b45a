"""Whole training steps on the GPU: the captured CUDA graph against the eager step, each GEMM engine
under capture, the loss curve against the CPU backend's with fixed noise, and the trainer's GPU
loop (device-side loss totals, snapshots, resume). Marked `gpu`: run on the device when CuPy sees
one, else on the CUDA emulation with fewer steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mochapy.backends import CPUBackend
from mochapy.config import load_config
from mochapy.net import Net
from mochapy.solvers import SolverConfig, make_solver
from mochapy.training import Trainer
from tests.gpu.cuda_emu.fixtures import steps
from tests.helpers import make_config, vae_layer_entries

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("gpu_runtime")]

BATCH = 100


def poster_net(backend: Any, images: np.ndarray, **kwargs: Any) -> Net:
    """The poster's galaxy VAE (69x69x1, 2x128 ReLU, z = 8), fed by MemoryData, shuffled."""
    entries = vae_layer_entries(pixels=4761, hidden=128, batch_size=BATCH)
    entries[0]["shuffle"] = True
    configs = [make_config(e["type"], **{k: v for k, v in e.items() if k != "type"})
               for e in entries]
    return Net("poster", backend, configs, seed=5, memory_data={"data": {"data": images}},
               **kwargs)


def adam(net: Net) -> Any:
    return make_solver(SolverConfig(method="adam", base_lr=1e-3, regu_coef=1e-4), net)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.01, 1.0, size=(350, 1, 69, 69))


def test_captured_graph_step_equals_the_eager_step(images: np.ndarray):
    from mochapy.backends.gpu import GPUBackend
    from mochapy.backends.gpu_step import StepRunner

    gpu = GPUBackend("float32")
    eager_net, graph_net = (poster_net(gpu, images) for _ in range(2))
    assert eager_net.n_params == 1_874_114
    eager = StepRunner(gpu, eager_net, adam(eager_net), graph=False)
    graph = StepRunner(gpu, graph_net, adam(graph_net), graph=True)
    previous_eps = None
    count = steps(100, 6)
    for step in range(count):
        eager.step()
        graph.step()
        eager_loss, graph_loss = eager.take_losses(), graph.take_losses()
        assert graph_loss == pytest.approx(eager_loss, rel=1e-6, abs=0), step
        eps = graph_net.fetch("eps")
        np.testing.assert_array_equal(eps, eager_net.fetch("eps"))
        assert previous_eps is None or not np.array_equal(eps, previous_eps)  # fresh each replay
        previous_eps = eps
    assert graph.mode == "graph", graph.note
    assert eager.mode == "eager"
    np.testing.assert_allclose(gpu.to_host(graph_net.params.data),
                               gpu.to_host(eager_net.params.data), rtol=1e-6, atol=1e-7)
    assert graph.solver.iteration == count
    assert graph_net.layer("eps").state_dict()["counter"] == count


@pytest.mark.parametrize("gemm", ["cublas", "tiled", "cutensor"])
def test_each_gemm_engine_is_captured_and_trains_like_cupy_matmul(
    images: np.ndarray, gemm: str
):
    from mochapy.backends.gpu import GPUBackend
    from mochapy.backends.gpu_gemm import EngineUnavailable
    from mochapy.backends.gpu_step import StepRunner

    reference_gpu = GPUBackend("float32", gemm="cupy")
    reference_net = poster_net(reference_gpu, images)
    reference = StepRunner(reference_gpu, reference_net, adam(reference_net), graph=False)
    gpu = GPUBackend("float32", gemm=gemm)
    try:
        gpu.use_gemm(gemm)
    except EngineUnavailable as error:
        pytest.skip(str(error))
    net = poster_net(gpu, images)
    runner = gpu.step_runner(net, adam(net))
    for _ in range(steps(10, 4)):
        reference.step()
        runner.step()
        expected, got = reference.take_losses(), runner.take_losses()
        assert got[0] == pytest.approx(expected[0], rel=1e-4)
    assert runner.mode == "graph", runner.note
    assert runner.gemm == gemm


def test_loss_curve_matches_the_cpu_backend_with_fixed_noise(images: np.ndarray):
    """Same init, same batches, the same eps fed to both: the float32 losses agree to 1e-4 over
    the first 10 iterations and 1e-2 up to 30 (Adam amplifies rounding differences slowly)."""
    from mochapy.backends.gpu import GPUBackend

    nets = [poster_net(backend, images, inputs={"eps": (8,)})
            for backend in (CPUBackend("float32"), GPUBackend("float32"))]
    solvers = [adam(net) for net in nets]
    noise = np.random.default_rng(1).standard_normal((steps(30, 12), BATCH, 8))
    curves: list[list[float]] = [[], []]
    for eps in noise:
        for net, solver, curve in zip(nets, solvers, curves, strict=True):
            net.set_input("eps", eps)
            net.forward()
            net.backward()
            curve.append(net.loss())
            solver.update()
    cpu_curve, gpu_curve = np.array(curves)
    np.testing.assert_allclose(gpu_curve[:10], cpu_curve[:10], rtol=1e-4)
    np.testing.assert_allclose(gpu_curve, cpu_curve, rtol=1e-2)
    assert gpu_curve[-1] < gpu_curve[0]


def train(config: Path, out: Path, backend: str, max_iter: int, resume: bool = False) -> Trainer:
    trainer = Trainer(load_config(str(config)), str(out), backend=backend, max_iter=max_iter,
                      resume=resume, progress=False, echo=lambda line: None)
    trainer.run()
    return trainer


def test_trainer_on_the_gpu_matches_the_cpu_and_resumes_exactly(tiny_example: Path, tmp_path: Path):
    """examples/tiny.yaml (no random layer, a step lr policy): the GPU run's summaries follow the
    CPU's; a GPU run stopped at 300 and resumed to 600 ends where a straight run ends."""
    cpu = train(tiny_example, tmp_path / "cpu", "cpu", 600)
    straight = train(tiny_example, tmp_path / "gpu", "gpu", 600)
    cpu_losses = np.array(cpu.lounge.series["train/loss"])
    gpu_losses = np.array(straight.lounge.series["train/loss"])
    np.testing.assert_array_equal(gpu_losses[:, 0], cpu_losses[:, 0])
    np.testing.assert_allclose(gpu_losses[:, 1], cpu_losses[:, 1], rtol=5e-3)
    train(tiny_example, tmp_path / "resumed", "gpu", 300)
    resumed = train(tiny_example, tmp_path / "resumed", "gpu", 600, resume=True)
    np.testing.assert_allclose(resumed.backend.to_host(resumed.net.params.data),
                               straight.backend.to_host(straight.net.params.data), rtol=1e-6)
