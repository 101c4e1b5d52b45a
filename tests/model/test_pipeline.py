"""The galaxy VAE pipeline end to end, as a user runs it: the README's main job
(examples/galaxy_vae.yaml, both stages) cut to a few dozen iterations and trained with the real
`mochapy run`, its report, then `galaxy-model evaluate / encode / figures` and the Python API on
that run, each checked against a direct computation. One tiny run is shared by every test."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from scipy.stats import norm

from galaxy_model.baseline import fit_gaussian2d
from galaxy_model.builtin import load
from galaxy_model.dataset import GalaxyDataset, write_dataset
from galaxy_model.evaluation import evaluate
from galaxy_model.model import GalaxyVAE
from mochapy.config import load_config
from mochapy.errors import DataError
from mochapy.runs import read_weights

REPO = Path(__file__).resolve().parents[2]
MAIN_JOB = REPO / "examples" / "galaxy_vae.yaml"
# shipped run -> its latent dimension
SHIPPED_RUNS = {"galaxy_vae_full": 8, "galaxy_vae_z32": 32, "galaxy_vae_z32_rejoint": 32,
                "galaxy_vae_z32_noise": 32, "galaxy_vae_z32_roughness": 32,
                "galaxy_vae_z32_wide": 32, "galaxy_vae_z32_contrast": 36, "galaxy_vae_gz": 8,
                "galaxy_vae_gz_best": 8, "galaxy_vae_gz_z32": 32, "galaxy_vae_gz_z32_contrast": 36}
TINY_SIZES = "train=200,heldout=50,valid=100,train-large=200"
HELDOUT_IMAGES = 50
STAGE_ITERATIONS = {"mean": 30, "sd": 20}
SUMMARY_KEYS = ("n_images", "mse_win_fraction", "likelihood_win_fraction",
                "elbo_nats_per_image", "bits_per_dim", "published")
PUBLISHED = {"mse_win_fraction": 0.971, "likelihood_win_fraction": 0.972}
FIGURES = {"conditionals.png", "tsne.png", "traversals.png", "residuals.png",
           "training_curves.png"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def console_command(script: str, module: str) -> list[str]:
    """The installed console script, else the same entry point through this interpreter."""
    path = Path(sys.executable).with_name(script)
    return [str(path)] if path.exists() else [
        sys.executable, "-c", f"from {module} import main; main()"]


MOCHAPY = console_command("mochapy", "mochapy.cli")
GALAXY_MODEL = console_command("galaxy-model", "galaxy_model.cli")


def run_command(command: list[str], *args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def assert_succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path


def tiny_main_job(folder: Path) -> Path:
    """The main job itself (extends + its own stages), only shorter: every stage keeps its `set`
    and `train_only`, and gets a few dozen iterations with no time budget."""
    stages = []
    for stage in yaml.safe_load(MAIN_JOB.read_text())["stages"]:
        shorter = {"solver.max_iter": STAGE_ITERATIONS[stage["name"]], "solver.max_seconds": 0}
        stages.append({**stage, "set": {**(stage.get("set") or {}), **shorter}})
    net = {
        "extends": str(MAIN_JOB),
        "name": "galaxy_vae_tiny",
        "set": {
            "data.batch_size": 10,
            "coffee_breaks.training_summary.every": 10,
            "coffee_breaks.validation.every": 10,
            "coffee_breaks.validation.max_batches": 2,
        },
        "stages": stages,
    }
    path = folder / "net.yaml"
    path.write_text(yaml.safe_dump(net, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small built-in splits in a private cache, for this process and the commands it starts."""
    cache = tmp_path_factory.mktemp("galaxy_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GALAXY_MODEL_CACHE", str(cache))
        patch.setenv("GALAXY_MODEL_BUILTIN_SIZES", TINY_SIZES)
        patch.setenv("OPENBLAS_NUM_THREADS", "1")
        yield cache


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mochapy run` of the shortened main job: training, both stages, then the galaxy report."""
    folder = tmp_path_factory.mktemp("main_job")
    net = tiny_main_job(folder)
    assert_succeeded(run_command(MOCHAPY, "run", net, "--out", "run", "--quiet", cwd=folder))
    return folder / "run"


@pytest.fixture(scope="module")
def heldout(tiny_data: Path) -> GalaxyDataset:
    return load("builtin:heldout")


def test_main_job_trains_both_stages_and_writes_the_report(trained: Path) -> None:
    report = (trained / "report.md").read_text()
    assert "97.1%" in report and "97.2%" in report

    metrics = json.loads((trained / "metrics.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in metrics, key
    assert metrics["published"] == PUBLISHED
    assert metrics["n_images"] == HELDOUT_IMAGES
    for fraction in ("mse_win_fraction", "likelihood_win_fraction"):
        assert 0.0 <= metrics[fraction] <= 1.0
    assert math.isfinite(metrics["elbo_nats_per_image"])
    assert metrics["bits_per_dim"] == pytest.approx(
        -metrics["elbo_nats_per_image"] / (69 * 69 * math.log(2)))
    real = metrics["splits"]["builtin:real"]
    assert real["n_images"] > 100 and set(SUMMARY_KEYS) <= set(real)

    pngs = {path.name for path in (trained / "figures").glob("*.png")}
    assert pngs == FIGURES
    for name in pngs:
        assert_png(trained / "figures" / name)
        assert f"(figures/{name})" in report

    training = json.loads((trained / "training.json").read_text())
    assert [stage["stage"] for stage in training["stages"]] == list(STAGE_ITERATIONS)
    assert [stage["iterations"] for stage in training["stages"]] == list(
        STAGE_ITERATIONS.values())
    assert training["iterations"] == sum(STAGE_ITERATIONS.values()) and training["finished"]

    # The stages did what the main job says: in `mean` the mean learned at a fixed sd of 0.02
    # while the sd head learned from its start at 0.02; `sd` trained only the sd head
    # (train_only: [x_sigma]).
    mean_net = load_config(str(trained / "stage1-mean" / "net.yaml"))
    recon = next(c for c in mean_net.layers if c.name == "recon")
    assert recon.mean_sd == 0.02
    after_mean = read_weights(str(trained / "stage1-mean" / "weights.h5"))
    final = read_weights(str(trained / "weights.h5"))
    assert after_mean.keys() == final.keys()
    assert np.any(after_mean["x_sigma.weight"])
    assert abs(float(np.mean(after_mean["x_sigma.bias"])) + 3.963) < 0.5
    changed = {key for key in final if not np.array_equal(final[key], after_mean[key])}
    assert changed == {"x_sigma.weight", "x_sigma.bias"}


def direct_comparison(model: GalaxyVAE, images: np.ndarray) -> dict[str, float]:
    """The poster's two criteria and the median MSEs, from encode/decode and the baseline fit:
    the VAE wins on MSE where f_mu(g_mu(x)) has the lower pixel MSE, and on likelihood where x is
    more probable under N(f_mu, f_sigma^2) than under N(x_hat, s2 I), s2 the best (the baseline's
    mean squared residual), whose log density is -m/2 (log(2 pi s2) + 1)."""
    x = images.astype(np.float64)
    decoded = model.decode(model.encode(images)[0])
    baseline = fit_gaussian2d(images).model.reshape(x.shape)
    per_image = (len(x), -1)
    m = x[0].size
    mse_model = ((decoded.mean - x) ** 2).reshape(per_image).mean(axis=1)
    mse_baseline = ((baseline - x) ** 2).reshape(per_image).mean(axis=1)
    loglik_model = norm.logpdf(x, decoded.mean, decoded.sd).reshape(per_image).sum(axis=1)
    loglik_baseline = -m / 2 * (np.log(2 * np.pi * mse_baseline) + 1)
    return {
        "mse_win_fraction": float(np.mean(mse_model < mse_baseline)),
        "likelihood_win_fraction": float(np.mean(loglik_model > loglik_baseline)),
        "median_mse_model": float(np.median(mse_model)),
        "median_mse_baseline": float(np.median(mse_baseline)),
    }


def blend_toward_reconstructions(model: GalaxyVAE, dataset: GalaxyDataset) -> GalaxyDataset:
    """Images moved from x (a = 0) to f_mu(g_mu(x)) (a = 1) across the set: the barely trained
    VAE loses to the baseline on real galaxies and beats it near its own reconstructions, so
    the win fractions lie strictly between 0 and 1 and a wrong comparison shows."""
    share = np.linspace(0.0, 1.0, len(dataset), dtype=np.float32)[:, None, None, None]
    images = share * model.reconstruct(dataset.data).mean + (1 - share) * dataset.data
    return GalaxyDataset(images, dataset.scale, dataset.offset, dataset.provenance)


@pytest.mark.parametrize("data", ["builtin:heldout", "blend.h5"])
def test_evaluate_command_matches_a_direct_computation(
    data: str, trained: Path, heldout: GalaxyDataset, tmp_path: Path
) -> None:
    model = GalaxyVAE.load(str(trained))
    dataset = heldout
    if data == "blend.h5":
        dataset = blend_toward_reconstructions(model, heldout)
        write_dataset(tmp_path / data, dataset)
    expected = direct_comparison(model, dataset.data)
    if data == "blend.h5":
        assert 0 < expected["mse_win_fraction"] < 1, expected
        assert 0 < expected["likelihood_win_fraction"] < 1, expected

    result = run_command(GALAXY_MODEL, "evaluate", "--run", trained, "--data", data,
                         "--json", "out.json", cwd=tmp_path)
    assert_succeeded(result)
    assert "97.1%" in result.stdout
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["n_images"] == HELDOUT_IMAGES and summary["data"] == data
    for key in ("mse_win_fraction", "likelihood_win_fraction"):
        assert summary[key] == pytest.approx(expected[key]), key
    for key in ("median_mse_model", "median_mse_baseline"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-5), key
    assert summary["published"] == PUBLISHED
    assert summary["bits_per_dim"] == pytest.approx(
        -summary["elbo_nats_per_image"] / (dataset.data[0].size * math.log(2)))


def test_encode_command_round_trip(
    trained: Path, heldout: GalaxyDataset, tmp_path: Path
) -> None:
    result = run_command(GALAXY_MODEL, "encode", "--run", trained, "--data", "builtin:heldout",
                         "--out", "latents.h5", cwd=tmp_path)
    assert_succeeded(result)
    with h5py.File(tmp_path / "latents.h5", "r") as handle:
        mean, sd = handle["mean"][()], handle["sd"][()]
        provenance = [p.decode() if isinstance(p, bytes) else p for p in handle["provenance"][()]]
        attrs = dict(handle.attrs)

    model = GalaxyVAE.load(str(trained))
    expected_mean, expected_sd = model.encode(heldout.data)
    assert mean.shape == sd.shape == (HELDOUT_IMAGES, model.latent_dim)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sd, expected_sd, rtol=1e-6, atol=1e-6)
    assert np.all(sd > 0)
    assert provenance == heldout.provenance
    assert attrs["data"] == "builtin:heldout" and attrs["run_dir"] == str(trained)

    decoded, reconstructed = model.decode(mean), model.reconstruct(heldout.data)
    np.testing.assert_allclose(decoded.mean, reconstructed.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(decoded.sd, reconstructed.sd, rtol=1e-5, atol=1e-6)


def test_figures_command_writes_every_png(trained: Path, tmp_path: Path) -> None:
    result = run_command(GALAXY_MODEL, "figures", "--run", trained, "--data", "builtin:heldout",
                         "--out", "figs", cwd=tmp_path)
    assert_succeeded(result)
    written = [Path(line.removeprefix("wrote ")) for line in result.stdout.splitlines()
               if line.startswith("wrote ")]
    assert {path.name for path in written} == FIGURES
    assert {path.name for path in (tmp_path / "figs").iterdir()} == FIGURES
    for path in written:
        assert_png(tmp_path / path)


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty-directory"])
def test_figures_command_refuses_a_non_run(exists: bool, tiny_data: Path, tmp_path: Path) -> None:
    not_a_run = tmp_path / "not_a_run"
    if exists:
        not_a_run.mkdir()
    result = run_command(GALAXY_MODEL, "figures", "--run", not_a_run, "--data",
                         "builtin:heldout", "--out", "figs", cwd=tmp_path)
    assert_one_line_error(result, str(not_a_run), "not a run directory")
    assert not (tmp_path / "figs").exists()


@pytest.mark.parametrize("name", sorted(SHIPPED_RUNS))
def test_shipped_runs_load_and_evaluate(name: str, tiny_data: Path) -> None:
    shipped = REPO / "results" / name
    if not shipped.exists():
        pytest.skip(f"{shipped} is not in this checkout yet")
    assert (shipped / "metrics.json").is_file(), "the shipped run lacks its metrics.json"
    metrics = json.loads((shipped / "metrics.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in metrics, key
    assert metrics["published"] == PUBLISHED

    model = GalaxyVAE.load(str(shipped))
    assert model.image_shape == (1, 69, 69) and model.latent_dim == SHIPPED_RUNS[name]
    summary = evaluate(model, load("builtin:heldout"), elbo_samples=1).summary
    for key in SUMMARY_KEYS:
        assert key in summary, key
    assert summary["n_images"] == HELDOUT_IMAGES
    for fraction in ("mse_win_fraction", "likelihood_win_fraction"):
        assert 0.0 <= summary[fraction] <= 1.0
    assert math.isfinite(summary["elbo_nats_per_image"])


# contrast experiment -> the shipped run it starts from
CONTRAST_STARTS = {"galaxy_vae_z32_contrast": "galaxy_vae_z32_wide",
                   "galaxy_vae_gz_z32_contrast": "galaxy_vae_gz_z32"}


@pytest.mark.parametrize("name", sorted(CONTRAST_STARTS))
def test_the_contrast_run_changed_only_the_sd_of_the_run_it_started_from(
        name: str, tiny_data: Path) -> None:
    """Only the statistics latents and the contrast head trained: g_mu(x)[:32] and f_mu are the
    starting run's exactly; the sd is not."""
    runs = [REPO / "results" / run for run in (CONTRAST_STARTS[name], name)]
    if not all(run.exists() for run in runs):
        pytest.skip("the shipped starting and contrast runs are not in this checkout")
    wide, contrast = (GalaxyVAE.load(str(run)) for run in runs)
    x = load("builtin:heldout").data[:20]
    z_wide, z_contrast = wide.encode(x)[0], contrast.encode(x)[0]
    np.testing.assert_array_equal(z_contrast[:, :32], z_wide)
    before, after = wide.decode(z_wide), contrast.decode(z_contrast)
    np.testing.assert_array_equal(after.mean, before.mean)
    assert np.all(after.sd > 0) and not np.allclose(after.sd, before.sd, rtol=1e-3)


@pytest.mark.parametrize("name", sorted(CONTRAST_STARTS))
def test_the_contrast_experiment_trains_only_its_new_layers(name: str, tiny_data: Path,
                                                           tmp_path: Path) -> None:
    """`mochapy run` of the contrast experiment, shortened, from the shipped run it starts from:
    every weight that run has comes out unchanged, the contrast head does not."""
    wide = REPO / "results" / CONTRAST_STARTS[name]
    if not wide.exists():
        pytest.skip(f"the shipped {wide.name} run is not in this checkout")
    experiment = REPO / "experiments" / f"{name}.yaml"
    (stage,) = yaml.safe_load(experiment.read_text())["stages"]
    stage["set"] = {**stage["set"], "solver.max_iter": 5, "solver.max_seconds": 0,
                    "data.source": "builtin:valid"}  # the tiny split
    net = {"extends": str(experiment), "name": "contrast_tiny", "set": {"data.batch_size": 10},
           "stages": [stage]}
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(net, sort_keys=False))
    assert_succeeded(run_command(MOCHAPY, "run", tmp_path / "net.yaml", "--out", "run",
                                 "--quiet", cwd=tmp_path))
    before, after = read_weights(str(wide / "weights.h5")), read_weights(
        str(tmp_path / "run" / "weights.h5"))
    assert set(before) < set(after)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert np.any(after["contrast.weight"] != 0) and np.any(after["z_mu_stats.bias"] != 0)
    assert "97.1%" in (tmp_path / "run" / "report.md").read_text()  # the poster's row


def test_python_api_shapes(trained: Path, heldout: GalaxyDataset) -> None:
    model = GalaxyVAE.load(str(trained))
    assert model.image_shape == (1, 69, 69) and model.latent_dim == 8
    x = heldout.data[:7]  # not a whole batch: the predictor pads and trims

    reconstructed = model.reconstruct(x)
    assert reconstructed.mean.shape == reconstructed.sd.shape == x.shape
    assert np.all(np.isfinite(reconstructed.mean)) and np.all(reconstructed.sd > 0)
    np.testing.assert_allclose(model.reconstruct(x[:1]).mean, reconstructed.mean[:1],
                               rtol=1e-5, atol=1e-6)

    z, sampled = model.sample_posterior(x, np.random.default_rng(4))
    assert z.shape == (7, 8)
    assert sampled.mean.shape == sampled.sd.shape == x.shape
    again, _ = model.sample_posterior(x, np.random.default_rng(4))
    np.testing.assert_array_equal(z, again)
    assert not np.allclose(z, model.encode(x)[0])


def test_the_run_records_the_image_shape_and_latent_width(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GalaxyVAE reads training.json's per-row blob shapes; a run without them (trained before
    they were recorded, like the shipped ones) still loads, its image shape read off the weights."""
    roles = GalaxyVAE.load(str(trained)).roles
    shapes = json.loads((trained / "training.json").read_text())["blob_shapes"]
    assert shapes[roles["input"]] == [1, 69, 69] and shapes[roles["latent"]] == [8]

    def no_inference(run: object) -> tuple[int, ...]:
        raise AssertionError("the image shape was inferred although the run records it")

    with monkeypatch.context() as patch:
        patch.setattr(GalaxyVAE, "_input_shape", staticmethod(no_inference))
        assert GalaxyVAE.load(str(trained)).image_shape == (1, 69, 69)

    old = tmp_path / "old"
    old.mkdir()
    for name in ("net.yaml", "weights.h5"):
        shutil.copyfile(trained / name, old / name)
    info = json.loads((trained / "training.json").read_text())
    (old / "training.json").write_text(json.dumps({k: v for k, v in info.items()
                                                   if k != "blob_shapes"}))
    model = GalaxyVAE.load(str(old))
    assert model.image_shape == (1, 69, 69) and model.latent_dim == 8

    info["blob_shapes"][roles["latent"]] = [5]
    (old / "training.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"training.json: latent .* recorded as \(5,\)"):
        GalaxyVAE.load(str(old))


def test_wrong_image_size_is_a_one_line_data_error(
    trained: Path, tmp_path: Path, tiny_data: Path
) -> None:
    small = GalaxyDataset(
        data=np.random.default_rng(0).normal(size=(3, 1, 32, 32)), scale=np.ones(3),
        offset=np.zeros((3, 1)), provenance=[f"test row {i}" for i in range(3)],
    )
    model = GalaxyVAE.load(str(trained))
    with pytest.raises(DataError) as caught:
        evaluate(model, small, label="small.h5")
    message = str(caught.value)
    assert "\n" not in message and "small.h5" in message and "(1, 32, 32)" in message
    with pytest.raises(DataError):
        model.encode(small.data)

    write_dataset(tmp_path / "small.h5", small)
    result = run_command(GALAXY_MODEL, "evaluate", "--run", trained, "--data", "small.h5",
                         cwd=tmp_path)
    assert_one_line_error(result, "small.h5", "(1, 69, 69)")
