"""The CUDA-graph capture of a training step when an engine refuses it (issue 17's defects): the
next engine is captured without host copies or kernel compilation inside the capture, replays
match eager steps, and the backend's own GEMM engine is left as it was. Marked `gpu`: run on the
device when CuPy sees one, else on the CUDA emulation (where a host copy or a module load during
a capture raises, as CUDA refuses it)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from tests.helpers import make_config, vae_layer_entries

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("gpu_runtime")]


def test_tiled_gemm_is_compiled_before_it_can_be_captured():
    """A tiled GEMM first used inside a capture must not compile there (a module load)."""
    from mochapy.backends.gpu import GPUBackend

    gpu = GPUBackend("float32", gemm="tiled")
    gpu.use_gemm("tiled")
    rng = np.random.default_rng(3)
    shapes = {(False, False): ((7, 5), (5, 9)), (True, False): ((5, 7), (5, 9)),
              (False, True): ((7, 5), (9, 5)), (True, True): ((5, 7), (9, 5))}
    operands = {key: (rng.normal(size=a).astype(np.float32), rng.normal(size=b).astype(np.float32))
                for key, (a, b) in shapes.items()}
    device = {key: (gpu.from_host(a), gpu.from_host(b), gpu.zeros((7, 9)))
              for key, (a, b) in operands.items()}
    gpu.stream.begin_capture()
    try:
        for (trans_a, trans_b), (a, b, out) in device.items():
            gpu.gemm(a, b, out, trans_a=trans_a, trans_b=trans_b)
    finally:
        graph = gpu.stream.end_capture()
    graph.launch()
    for (trans_a, trans_b), (a, b) in operands.items():
        expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
        got = gpu.to_host(device[(trans_a, trans_b)][2])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def small_vae(backend: Any) -> Any:
    from mochapy.net import Net

    entries = vae_layer_entries(pixels=25, hidden=16, batch_size=10)
    entries[0]["shuffle"] = True
    configs = [make_config(e["type"], **{k: v for k, v in e.items() if k != "type"})
               for e in entries]
    images = np.random.default_rng(0).uniform(0.01, 1.0, size=(40, 1, 5, 5))
    return Net("small", backend, configs, seed=5, memory_data={"data": {"data": images}})


def adam(net: Any) -> Any:
    from mochapy.solvers import SolverConfig, make_solver

    return make_solver(SolverConfig(method="adam", base_lr=1e-2, regu_coef=1e-4), net)


@pytest.fixture
def runners(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A graph runner and an eager twin on one `auto` backend whose cuBLAS raises inside a stream
    capture (as an old or failing cuBLAS would), so the capture must fall back to `tiled`."""
    from mochapy.backends.gpu import GPUBackend
    from mochapy.backends.gpu_gemm import CublasEngine
    from mochapy.backends.gpu_step import StepRunner

    gpu = GPUBackend("float32", gemm="auto")
    run = CublasEngine.__call__

    def refuse_in_capture(self: Any, *args: Any) -> None:
        if gpu.stream.is_capturing():
            raise RuntimeError("cuBLAS refuses this capture")
        run(self, *args)

    monkeypatch.setattr(CublasEngine, "__call__", refuse_in_capture)
    graph_net, eager_net = small_vae(gpu), small_vae(gpu)
    graph = StepRunner(gpu, graph_net, adam(graph_net), graph=True)
    eager = StepRunner(gpu, eager_net, adam(eager_net), graph=False)
    return gpu, graph, eager


def test_a_refused_capture_falls_back_to_the_next_engine_and_replays_like_eager_steps(
    runners: Any,
):
    """Adam's step count and hyperparameters stay right on every replay (no host copy was
    recorded), and no warning says the steps fell back to eager."""
    gpu, graph, eager = runners
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for _ in range(5):
            graph.step()
            eager.step()
            assert graph.take_losses() == pytest.approx(eager.take_losses(), rel=1e-5)
    assert (graph.mode, graph.gemm, graph.note) == ("graph", "tiled", "")
    np.testing.assert_allclose(gpu.to_host(graph.net.params.data),
                               gpu.to_host(eager.net.params.data), rtol=1e-5, atol=1e-6)


def test_a_capture_leaves_the_backends_engine_for_other_nets(runners: Any):
    """Evaluation nets on the same backend keep the engine they had: the graph holds its own."""
    gpu, graph, _ = runners
    assert gpu.gemm_engine.name == "cublas"
    graph.step()
    graph.step()
    assert graph.mode == "graph" and graph.gemm == "tiled"
    assert gpu.gemm_engine.name == "cublas"
