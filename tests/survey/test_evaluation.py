"""Three bands end to end, small: examples/galaxy_vae_3band.yaml (ivar and mask in the loss)
trains on `synth --bands 3` data; evaluate compares it with both baselines, unweighted and
ivar-weighted, per band and in total, leaving masked pixels out; figures come in colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from galaxy_model import metrics
from galaxy_model.cli import main as galaxy_main
from galaxy_model.dataset import read_dataset, write_dataset
from galaxy_model.evaluation import adds_noise_variance, evaluate
from galaxy_model.figures import lupton_rgb
from galaxy_model.model import GalaxyVAE
from galaxy_model.synth import synthesize
from mochapy.cli import main as mochapy_main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "galaxy_vae_3band.yaml"


@pytest.fixture(scope="module")
def three_band_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 3-band example, shortened to a few iterations per stage, on 40 synthetic galaxies."""
    folder = tmp_path_factory.mktemp("three_band")
    data = synthesize(40, seed=7, bands=3)
    write_dataset(folder / "train.h5", data.subset(slice(0, 30)))
    write_dataset(folder / "heldout.h5", data.subset(slice(30, 40)))
    stages = []
    for stage in yaml.safe_load(EXAMPLE.read_text())["stages"]:
        sets = {**(stage.get("set") or {}), "solver.max_iter": 4, "solver.max_seconds": 0}
        if "data.source" in sets:
            sets["data.source"] = str(folder / "train.h5")
        stages.append({**stage, "set": sets})
    net = {"extends": str(EXAMPLE), "name": "three_band_tiny", "stages": stages,
           "set": {"data.source": str(folder / "train.h5"), "data.batch_size": 10,
                   "coffee_breaks.validation.source": str(folder / "heldout.h5"),
                   "coffee_breaks.validation.every": 4, "coffee_breaks.validation.max_batches": 1,
                   "coffee_breaks.training_summary.every": 4}}
    (folder / "net.yaml").write_text(yaml.safe_dump(net, sort_keys=False))
    result = CliRunner().invoke(mochapy_main, ["run", str(folder / "net.yaml"), "--out",
                                               str(folder / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    return {"run": folder / "run", "heldout": folder / "heldout.h5"}


def test_the_3band_net_uses_ivar_and_mask_with_the_noise_variance(three_band_run):
    model = GalaxyVAE.load(str(three_band_run["run"]))
    assert model.image_shape == (3, 69, 69) and adds_noise_variance(model)
    recon = next(layer for layer in model.run.config.layers if layer.name == "recon")
    assert recon.bottoms[3:] == ("ivar", "mask") and recon.variance == "model_plus_noise"


def test_evaluate_reports_both_baselines_weighted_and_per_band(three_band_run):
    model = GalaxyVAE.load(str(three_band_run["run"]))
    dataset = read_dataset(three_band_run["heldout"])
    summary = evaluate(model, dataset, baselines=("gaussian", "sersic"), elbo_samples=1).summary
    comparisons = summary["comparisons"]
    assert set(comparisons) == {"gaussian", "sersic"}
    for weightings in comparisons.values():
        assert set(weightings) == {"unweighted", "ivar_weighted"}
        for bands in weightings.values():
            assert list(bands) == ["all", "i", "r", "g"]
            for row in bands.values():
                assert row["n_images"] == 10
                assert 0.0 <= row["mse_win_fraction"] <= 1.0
    unweighted = comparisons["gaussian"]["unweighted"]["all"]
    assert unweighted["mse_win_fraction"] == summary["mse_win_fraction"]  # the poster's numbers
    assert unweighted["likelihood_win_fraction"] == summary["likelihood_win_fraction"]
    table = metrics.comparisons_table(summary)
    assert "| sersic | ivar_weighted | g |" in table


def test_weighted_numbers_ignore_masked_pixels(three_band_run):
    """Spoiling pixels that are masked (mask 1 or ivar 0) leaves every ivar-weighted number of
    a shape-only comparison as it was (the VAE's input is kept, only the scored x changes)."""
    model = GalaxyVAE.load(str(three_band_run["run"]))
    dataset = read_dataset(three_band_run["heldout"])
    from galaxy_model.baseline import pixel_weights
    from galaxy_model.evaluation import comparison_records, fit_baseline, predictive_sd

    x = dataset.data.astype(np.float64)
    mask = np.zeros(x.shape, np.uint8)
    mask[:, :, :6, :6] = 1
    ivar = dataset.ivar.astype(np.float64)
    ivar[:, :, -6:, -6:] = 0.0
    weights = pixel_weights(x.shape, ivar, mask)
    recon = model.reconstruct(dataset.data)
    sd = predictive_sd(recon.sd, np.where(ivar > 0, 1.0 / np.where(ivar > 0, ivar, 1.0), 0.0))
    spoiled = x.copy()
    spoiled[weights == 0] = 7.0

    def records(images):
        fitted = fit_baseline("gaussian", images, ivar, mask)
        return comparison_records("gaussian/ivar_weighted", images, recon.mean, sd, fitted,
                                  weights, ["i", "r", "g"])

    clean, again = records(x), records(spoiled)
    for key in clean:
        np.testing.assert_allclose(again[key], clean[key], rtol=1e-6, err_msg=key)


def test_evaluate_command_takes_the_baseline_option_and_cutout_data(three_band_run, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(galaxy_main, [
        "evaluate", "--run", str(three_band_run["run"]), "--data", str(three_band_run["heldout"]),
        "--baseline", "sersic", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "| sersic | unweighted | all |" in result.output and out.exists()


def test_colour_figures_keep_each_band_in_its_channel():
    red = np.zeros((1, 3, 9, 9))
    red[0, 0, 3:6, 3:6] = 1.0
    rgb = lupton_rgb(red)
    assert rgb.shape == (1, 9, 9, 3)
    assert rgb[0, 4, 4, 0] > 0.5 and rgb[0, 4, 4, 1] == rgb[0, 4, 4, 2] == 0.0
    assert np.all(rgb[0, 0, 0] == 0.0)
