"""The benchmark's peer systems compute the same net and loss as the spec, and train."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def _load_peers() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"
    spec = importlib.util.spec_from_file_location("peers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("peers", module)
    spec.loader.exec_module(module)
    return module


peers = _load_peers()

BATCH = 100


def _build(framework: str):
    pytest.importorskip(framework)
    if framework == "torch":
        return peers.build_torch_peer("cpu", compiled=False, batch=BATCH)
    return peers.build_jax_peer(BATCH, device="cpu")


def _fixed_eps(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, peers.LATENT)).astype(np.float32)


def test_initial_parameters_have_the_poster_count_and_sd_heads():
    params = peers.init_parameters(seed=0)
    assert sum(value.size for value in params.values()) == 1_874_114
    for head in ("z_sd", "x_sd"):
        assert not params[f"{head}.weight"].any()
        assert np.all(params[f"{head}.bias"] == -1.0)
    scale = math.sqrt(3.0 / peers.IMAGE_PIXELS)
    assert np.abs(params["enc1.weight"]).max() <= scale
    assert params["enc1.weight"].std() > 0.5 * scale


def test_reference_loss_matches_closed_form_when_only_sd_biases_are_set():
    params = {name: np.zeros_like(value) for name, value in peers.init_parameters().items()}
    params["z_sd.bias"][:] = -1.0
    params["x_sd.bias"][:] = -2.0
    images = peers.sample_images(4)
    eps = _fixed_eps()[:4]
    recon, kl = peers.reference_loss(params, images, eps)
    x = images.astype(np.float64)
    expected_recon = 0.5 / 4 * np.sum(np.log(2 * np.pi) - 4.0 + x**2 * math.exp(4.0))
    expected_kl = 0.5 * peers.LATENT * (math.exp(-2.0) + 2.0 - 1.0)
    assert recon == pytest.approx(expected_recon, rel=1e-12)
    assert kl == pytest.approx(expected_kl, rel=1e-12)


def test_torch_net_has_exactly_the_poster_parameter_count():
    peer = _build("torch")
    assert peer.parameter_count == 1_874_114


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_peer_loss_at_init_matches_the_numpy_reference(framework: str):
    peer = _build(framework)
    eps = _fixed_eps()
    expected = peers.reference_loss(peers.init_parameters(), peers.sample_images(BATCH), eps)
    assert peer.losses(eps) == pytest.approx(expected, rel=2e-5)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_peer_adam_steps_decrease_the_loss_on_a_fixed_batch(framework: str):
    peer = _build(framework)
    eps = _fixed_eps()
    before = sum(peer.losses(eps))
    for _ in range(20):
        peer.step()
    peer.synchronize()
    after = sum(peer.losses(eps))
    assert after < before - 0.01 * abs(before)


def test_jax_peer_is_unavailable_without_jax(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(peers.PeerUnavailable, match="JAX is not installed"):
        peers.time_jax(batch=BATCH)


def test_cli_reports_an_unavailable_peer_as_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setitem(sys.modules, "jax", None)
    assert peers.main(["--system", "jax"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: JAX is not installed")


def test_torch_cuda_is_unavailable_without_a_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(peers.PeerUnavailable, match="no CUDA device"):
        peers.time_torch(device="cuda")


def test_cli_prints_one_timing_row_and_restores_torch_threads(
    capsys: pytest.CaptureFixture[str],
):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    argv = ["--system", "torch", "--batch", "10", "--warmup", "1", "--iters", "2", "--repeats", "2"]
    assert peers.main(argv + ["--threads", "1"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["system"] == "torch" and row["backend"] == "cpu" and row["batch"] == 10
    assert row["iters_per_sec"] > 0
    assert row["images_per_sec"] == pytest.approx(10 * row["iters_per_sec"])
    assert row["peak_mem_bytes"] is None
    assert "1 threads" in row["note"]
    assert torch.get_num_threads() == threads


def _load_benchmark(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_three_band_net_widens_only_the_image_layers():
    pixels = 3 * peers.IMAGE_PIXELS
    shapes = {name: (fan_in, fan_out) for name, fan_in, fan_out, _ in peers.layer_shapes(pixels)}
    assert shapes["enc1"] == (pixels, peers.HIDDEN) and shapes["x_sd"] == (peers.HIDDEN, pixels)
    assert peers.count_parameters() == 1_874_114
    assert peers.count_parameters(pixels) == 1_874_114 + 2 * 4761 * (3 * peers.HIDDEN + 2)
    assert peers.init_parameters(pixels=pixels)["x_mu.weight"].shape == (peers.HIDDEN, pixels)


def test_the_gemm_ceiling_counts_every_product_of_the_step_once():
    bench = _load_benchmark("iters_per_sec")
    weights = sum(i * o for _, i, o, _ in peers.layer_shapes())
    # forward, weight gradient and input gradient of every layer but the first's input gradient
    expected = 2 * BATCH * (3 * weights - peers.IMAGE_PIXELS * peers.HIDDEN)
    assert bench.step_flops(BATCH, peers.IMAGE_PIXELS) == expected
    assert len(bench.step_products(BATCH, peers.IMAGE_PIXELS)) == 3 * 8 - 1


def test_benchmark_profiles_times_interleaved_and_renders_the_docs_table(tmp_path, capsys):
    bench, tables = _load_benchmark("iters_per_sec"), _load_benchmark("speed_table")
    result = tmp_path / "result.json"
    argv = ["--backend", "cpu", "--systems", "mochapy", "gemm-ceiling", "--batch", "4",
            "--repeats", "2", "--seconds", "0.02", "--threads", "1", "--profile",
            "--json", str(result)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "profile of one mochapy cpu" in printed and "GEMM ceiling" in printed
    report = json.loads(result.read_text())
    profile = report["profile"]
    assert [r["layer"] for r in profile["layers"]][:3] == ["data", "eps", "enc1"]
    assert profile["layers"][2]["gemm_ms"] > 0 and set(profile["phases"]) >= {"solver", "loss"}
    assert sum(profile["phases"].values()) == pytest.approx(profile["step_ms"])
    (comparison,) = report["comparisons"]
    rows = {r["system"]: r for r in comparison["rows"]}
    assert set(rows) == {"mochapy", "gemm-ceiling"}
    assert len(rows["mochapy"]["rates"]) == 2 and rows["gemm-ceiling"]["of_gemm_ceiling"] == 1
    assert rows["mochapy"]["lowest"] <= rows["mochapy"]["iters_per_sec"] <= rows["mochapy"][
        "highest"]
    assert 0 < rows["mochapy"]["cores_busy"] < 1.5  # one thread asked, about one core used
    with pytest.raises(SystemExit):  # an existing result is not replaced without --force
        bench.parse_args(argv)

    document = tmp_path / "speed.md"
    document.write_text(f"# Speed\n{tables.START}\nold\n{tables.END}\nafter\n")
    assert tables.main([str(result), "--update", str(document)]) == 0
    text = document.read_text()
    assert "old" not in text and text.endswith(f"{tables.END}\nafter\n")
    assert "| **mochapy cpu** |" in text and "GEMM ceiling (" in text and "1 thread per" in text


@pytest.mark.slow
def test_the_jax_peer_keeps_to_one_core_when_one_thread_is_asked(tmp_path):
    """XLA's CPU pool ignores --xla_cpu_multi_thread_eigen; the peer pins the pool instead."""
    pytest.importorskip("jax")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to tell one from two")
    result = tmp_path / "result.json"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "iters_per_sec.py"
    done = subprocess.run(
        [sys.executable, str(script), "--backend", "cpu",
         "--systems", "jax", "--batch", "100", "--repeats", "2", "--seconds", "0.5",
         "--threads", "1", "--json", str(result)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(result.read_text())["comparisons"][0]["rows"]
    assert row["cores_busy"] < 1.3 and "XLA on one core" in row["note"]
