"""Bad input tried on purpose: malformed nets, damaged data files and unwritable outputs, run
through the real command lines (`mochapy run/check`, `galaxy-model evaluate/encode/figures/
prepare`) as a user runs them.

Every case must end with exit code 2, exactly one line on stderr that starts with `error:` and
names the culprit, no traceback, no file left behind, and every input file unchanged.
tests/reliability/test_bad_input.py checks that; `python tools/reliability_table.py` runs the
same cases and prints what each one did as the Markdown tables of docs/reliability.md
(`python tools/reliability_table.py --write docs/reliability.md` updates them there).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TIMEOUT_S = 120
IMAGE_SIDE = 8  # the little galaxy VAE of the assets reads 1 x 8 x 8 images


def _entry_point(module: str, script: str) -> list[str]:
    installed = Path(sys.executable).with_name(script)
    if installed.exists():
        return [str(installed)]
    return [sys.executable, "-c", f"from {module} import main; main()"]


MOCHAPY = _entry_point("mochapy.cli", "mochapy")
GALAXY_MODEL = _entry_point("galaxy_model.cli", "galaxy-model")


class CaseSkipped(Exception):
    """A case this machine cannot stage (mounting a full or read-only tmpfs needs root)."""


# -- shared inputs -------------------------------------------------------------------------------
def tiny_raw(assets: Path) -> dict:
    """examples/tiny.yaml with its data sources pointing at the copies in `assets`."""
    raw = yaml.safe_load((assets / "example" / "tiny.yaml").read_text())
    raw["layers"][0]["source"] = str(assets / "example" / "data" / "tiny_train.txt")
    raw["coffee_breaks"]["validation"]["source"] = str(assets / "example" / "data" / "tiny_test.h5")
    return raw


def galaxy_vae_raw(source: str) -> dict:
    """The poster's VAE (encoder, reparameterisation, decoder, sd heads, -ELBO) at toy size."""
    pixels, hidden, z = IMAGE_SIDE * IMAGE_SIDE, 8, 2
    sd_head = {"neuron": "Exponential", "weight_init": {"type": "Constant", "value": 0},
               "bias_init": {"type": "Constant", "value": -1}}

    def dense(name: str, bottom: str, size: int, top: str | None = None, **extra: Any) -> dict:
        return {"type": "InnerProduct", "name": name, "bottoms": [bottom], "tops": [top or name],
                "output_dim": size, **extra}

    return {
        "name": "toy_vae", "seed": 3,
        "layers": [
            {"type": "HDF5Data", "name": "data", "source": source, "batch_size": 4,
             "shuffle": True, "tops": ["data"]},
            dense("enc", "data", hidden, neuron="ReLU"),
            dense("z_mu", "enc", z),
            dense("z_sigma", "enc", z, **sd_head),
            {"type": "RandomNormal", "name": "eps", "tops": ["eps"], "output_dims": [z]},
            {"type": "ElementWise", "name": "z_noise", "bottoms": ["z_sigma", "eps"],
             "tops": ["z_noise"], "operation": "Multiply"},
            {"type": "ElementWise", "name": "z", "bottoms": ["z_mu", "z_noise"], "tops": ["z"],
             "operation": "Add"},
            dense("dec", "z", hidden, neuron="ReLU"),
            dense("x_mu", "dec", pixels),
            dense("x_sigma", "dec", pixels, **sd_head),
            {"type": "GaussianReconLoss", "name": "recon", "bottoms": ["x_mu", "x_sigma", "data"]},
            {"type": "GaussianKLLoss", "name": "kl", "bottoms": ["z_mu", "z_sigma"]},
        ],
        "solver": {"method": "adam", "base_lr": 0.001, "max_iter": 5},
        "coffee_breaks": {"training_summary": {"every": 5}, "snapshot": {"every": 5}},
        "roles": {"input": "data", "noise": "eps", "latent_mean": "z_mu", "latent_sd": "z_sigma",
                  "latent": "z", "recon_mean": "x_mu", "recon_sd": "x_sigma"},
    }


def galaxy_images(count: int = 12, side: int = IMAGE_SIDE, seed: int = 0) -> np.ndarray:
    """Round blobs on a noisy sky, (count, 1, side, side) float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    widths = rng.uniform(1.0, 2.5, size=(count, 1, 1, 1))
    blobs = np.exp(-(xx**2 + yy**2) / (2 * widths**2))
    return (blobs + 0.05 * rng.standard_normal((count, 1, side, side))).astype(np.float32)


def build_assets(folder: Path) -> Path:
    """What the cases read: the tiny example, a galaxy dataset, and a trained toy galaxy VAE."""
    from mochapy.config import load_config
    from mochapy.training import Trainer

    example = folder / "example"
    shutil.copytree(EXAMPLES / "data", example / "data")
    shutil.copyfile(EXAMPLES / "tiny.yaml", example / "tiny.yaml")
    write_h5(folder / "galaxies.h5", data=galaxy_images())
    net = folder / "toy_vae.yaml"
    net.write_text(yaml.safe_dump(galaxy_vae_raw(str(folder / "galaxies.h5")), sort_keys=False))
    Trainer(load_config(str(net)), str(folder / "vae_run"), progress=False,
            echo=lambda line: None).run()
    (folder / "cache").mkdir()
    return folder


def write_h5(path: Path, **arrays: np.ndarray) -> None:
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            handle[name] = array


def write_yaml(path: Path, raw: Any) -> None:
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))


def tiny_edited(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    """A setup writing net.yaml: the tiny example after `edit(raw)`."""

    def setup(case: Path, assets: Path) -> None:
        raw = tiny_raw(assets)
        edit(raw)
        write_yaml(case / "net.yaml", raw)

    return setup


def layer(raw: dict, name: str) -> dict:
    return next(entry for entry in raw["layers"] if entry["name"] == name)


def tiny_with_training_data(**arrays: np.ndarray) -> Callable[[Path, Path], None]:
    """A setup writing train.h5 from `arrays` and net.yaml (the tiny example) reading it."""

    def setup(case: Path, assets: Path) -> None:
        write_h5(case / "train.h5", **arrays)
        raw = tiny_raw(assets)
        layer(raw, "data")["source"] = "train.h5"
        write_yaml(case / "net.yaml", raw)

    return setup


def tiny_training_file(damage: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    """A setup writing a damaged copy of the example's training file and net.yaml reading it."""

    def setup(case: Path, assets: Path) -> None:
        shutil.copyfile(assets / "example" / "data" / "tiny_train.h5", case / "train.h5")
        damage(case / "train.h5")
        raw = tiny_raw(assets)
        layer(raw, "data")["source"] = "train.h5"
        write_yaml(case / "net.yaml", raw)

    return setup


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def scramble_header(path: Path) -> None:
    """Overwrite the first 512 bytes (the HDF5 superblock, the FITS header) with junk."""
    with open(path, "r+b") as handle:
        handle.write(np.random.default_rng(0).bytes(512))


def tiny_arrays(rows: int = 64, x_cols: int = 8, y_cols: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((rows, x_cols)).astype(np.float32),
            "y": rng.standard_normal((rows, y_cols)).astype(np.float32)}


def with_value(arrays: dict[str, np.ndarray], name: str, row: int, value: float) -> dict:
    arrays = copy.deepcopy(arrays)
    arrays[name][row, 0] = value
    return arrays


def dataset_file(data: Any = None, damage: Callable[[Path], None] | None = None,
                 name: str = "galaxies.h5") -> Callable[[Path, Path], None]:
    """A setup writing a galaxy dataset file (default: the good one), then damaging it."""

    def setup(case: Path, assets: Path) -> None:
        write_h5(case / name, data=galaxy_images() if data is None else data)
        if damage:
            damage(case / name)

    return setup


def nan_images() -> np.ndarray:
    images = galaxy_images()
    images[5, 0, 3, 4] = np.nan
    return images


def fits_file(data: Any = None, damage: Callable[[Path], None] | None = None,
              name: str = "galaxy.fits") -> Callable[[Path, Path], None]:
    """A setup writing a FITS image (default: one galaxy, 40x40), then damaging it."""

    def setup(case: Path, assets: Path) -> None:
        from astropy.io import fits

        image = galaxy_images(1, side=40, seed=2)[0, 0] if data is None else data
        fits.PrimaryHDU(np.asarray(image, dtype=np.float32)).writeto(case / name)
        if damage:
            damage(case / name)

    return setup


def run_folder(files: dict[str, Callable[[Path, Path], None]]) -> Callable[[Path, Path], None]:
    """A setup making folder `run/` that holds some of a run's files (made by the callables)."""

    def setup(case: Path, assets: Path) -> None:
        (case / "run").mkdir()
        for make in files.values():
            make(case / "run", assets)

    return setup


def copy_net_yaml(run: Path, assets: Path) -> None:
    shutil.copyfile(assets / "vae_run" / "net.yaml", run / "net.yaml")


def damaged_snapshot(run: Path, assets: Path) -> None:
    (run / "snapshots").mkdir()
    source = sorted((assets / "vae_run" / "snapshots").iterdir())[-1]
    shutil.copyfile(source, run / "snapshots" / source.name)
    truncate(run / "snapshots" / source.name)


def combined(*setups: Callable[[Path, Path], Any]) -> Callable[[Path, Path], Any]:
    """Several setups in turn; the clean-ups they return are undone in reverse order."""

    def setup(case: Path, assets: Path) -> Callable[[], None]:
        cleanups = [cleanup for make in setups if callable(cleanup := make(case, assets))]

        def undo() -> None:
            for cleanup in reversed(cleanups):
                cleanup()

        return undo

    return setup


# -- unwritable outputs ---------------------------------------------------------------------------
def _mount_tmpfs(folder: Path, options: str) -> Callable[[], None]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise CaseSkipped("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise CaseSkipped(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    return lambda: subprocess.run(["umount", "-l", str(folder)], check=True)


def read_only_folder(case: Path, assets: Path) -> Callable[[], None]:
    """`ro/`: a folder nobody can write into (root ignores permission bits: a read-only mount)."""
    folder = case / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        return _mount_tmpfs(folder, "ro,size=64k")
    folder.chmod(0o555)
    return lambda: folder.chmod(0o755)


def full_folder(case: Path, assets: Path) -> Callable[[], None]:
    """`full/`: a tiny tmpfs filled up to its last byte, so every write fails with ENOSPC."""
    folder = case / "full"
    folder.mkdir()
    unmount = _mount_tmpfs(folder, "size=64k")
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            unmount()
            raise
    finally:
        os.close(fd)
    return unmount


# -- the cases -------------------------------------------------------------------------------------
ASSETS = "{assets}"
GOOD_RUN = f"{ASSETS}/vae_run"
GOOD_DATA = f"{ASSETS}/galaxies.h5"


def mochapy_run(net: str = "net.yaml", *extra: str) -> list[str]:
    return [*MOCHAPY, "run", net, "--out", "run", "--quiet", *extra]


def galaxy(command: str, *args: str) -> list[str]:
    return [*GALAXY_MODEL, command, *args]


def _extends_loop(case: Path, assets: Path) -> None:
    write_yaml(case / "a.yaml", {"extends": "b.yaml", "name": "a"})
    write_yaml(case / "b.yaml", {"extends": "a.yaml", "name": "b"})


def _extends(base: str, **overrides: Any) -> Callable[[Path, Path], None]:
    def setup(case: Path, assets: Path) -> None:
        if base == "tiny.yaml":
            write_yaml(case / "tiny.yaml", tiny_raw(assets))
        write_yaml(case / "net.yaml", {"extends": base, **overrides})

    return setup


def _cycle(raw: dict) -> None:
    layer(raw, "hidden")["bottoms"] = ["pred"]


# -- setups for the nothing-lost cases ------------------------------------------------------------
GOOD_NET = f"{ASSETS}/toy_vae.yaml"


def copied_run(*, snapshots: bool = True, damage: Callable[[Path], None] | None = None
               ) -> Callable[[Path, Path], None]:
    """A setup copying the trained toy run to `run/` (without its snapshots, or with the newest
    one damaged)."""

    def setup(case: Path, assets: Path) -> None:
        shutil.copytree(assets / "vae_run", case / "run",
                        ignore=None if snapshots else shutil.ignore_patterns("snapshots"))
        if damage:
            for path in (case / "run" / "snapshots").iterdir():
                damage(path)

    return setup


def toy_net_edited(edit: Callable[[dict], None], name: str = "net.yaml"
                   ) -> Callable[[Path, Path], None]:
    """A setup writing the toy VAE's net (reading the shared galaxies.h5) after `edit(raw)`."""

    def setup(case: Path, assets: Path) -> None:
        raw = galaxy_vae_raw(str(assets / "galaxies.h5"))
        edit(raw)
        write_yaml(case / name, raw)

    return setup


def _nested_yaml(depth: int) -> str:
    return "name: deep\nlayers: " + "[" * depth + "]" * depth + "\n"


def _alias_bomb() -> str:
    """Nine levels of ten aliases each: a billion values once expanded, 1 KiB on disk."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(["name: bomb", *lines, "layers: *a9", ""])


def _write_list(lines: list[str]) -> Callable[[Path, Path], None]:
    def setup(case: Path, assets: Path) -> None:
        (case / "list.txt").write_text("\n".join(lines) + "\n")

    return setup


def _declared_huge_hdf5(case: Path, assets: Path) -> None:
    """train.h5 of a few KiB whose `x` declares 10^9 x 10^6 floats (chunked, never written)."""
    with h5py.File(case / "train.h5", "w") as handle:
        handle.create_dataset("x", shape=(10**9, 10**6), dtype=np.float32, chunks=(1, 1024))
        handle["y"] = tiny_arrays()["y"]


def _external_link(case: Path, assets: Path) -> None:
    """train.h5 whose `x` is an external link to another local file."""
    write_h5(case / "other.h5", x=tiny_arrays()["x"])
    with h5py.File(case / "train.h5", "w") as handle:
        handle["x"] = h5py.ExternalLink(str(case / "other.h5"), "/x")
        handle["y"] = tiny_arrays()["y"]


def _external_storage(case: Path, assets: Path) -> None:
    """train.h5 whose `x` keeps its raw data in secret.bin, another local file."""
    x = tiny_arrays()["x"]
    (case / "secret.bin").write_bytes(x.tobytes())
    with h5py.File(case / "train.h5", "w") as handle:
        handle.create_dataset("x", shape=x.shape, dtype=x.dtype,
                              external=[(str(case / "secret.bin"), 0, x.nbytes)])
        handle["y"] = tiny_arrays()["y"]


def _dataset_with(**extra: np.ndarray) -> Callable[[Path, Path], None]:
    def setup(case: Path, assets: Path) -> None:
        write_h5(case / "galaxies.h5", data=galaxy_images(), **extra)

    return setup


def _dataset_external_link(case: Path, assets: Path) -> None:
    write_h5(case / "other.h5", data=galaxy_images())
    with h5py.File(case / "galaxies.h5", "w") as handle:
        handle["data"] = h5py.ExternalLink(str(case / "other.h5"), "/data")


def _fits_bomb(case: Path, assets: Path) -> None:
    """A 64 x 64 tile-compressed FITS whose header says it decompresses to 50000 x 50000."""
    from astropy.io import fits

    fits.CompImageHDU(galaxy_images(1, side=64)[0, 0]).writeto(case / "bomb.fits")
    raw = (case / "bomb.fits").read_bytes()
    for axis in (b"ZNAXIS1", b"ZNAXIS2"):
        card = axis.ljust(8) + b"= " + b"64".rjust(20)
        assert card in raw
        raw = raw.replace(card, axis.ljust(8) + b"= " + b"50000".rjust(20), 1)
    (case / "bomb.fits").write_bytes(raw)


def _symlink(name: str, target: str) -> Callable[[Path, Path], None]:
    def setup(case: Path, assets: Path) -> None:
        (case / name).symlink_to(target)

    return setup


def _user_net_in_out(case: Path, assets: Path) -> None:
    """The user's own net.yaml (with comments) in the folder given as --out."""
    write_yaml(case / "net.yaml", "# my net, hand-written\n" + yaml.safe_dump(
        tiny_raw(assets), sort_keys=False))


def _file(name: str, content: bytes = b"earlier results") -> Callable[[Path, Path], None]:
    def setup(case: Path, assets: Path) -> None:
        path = case / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    return setup


def _integer_images() -> np.ndarray:
    return (galaxy_images() * 100 + 100).clip(0, 255).astype(np.uint8)


def _lr_policy(policy: Any) -> Callable[[dict], None]:
    return lambda raw: raw["solver"].update(lr_policy=policy)



CASES: list[dict[str, Any]] = [
    # -- YAML nets ------------------------------------------------------------------------------
    {"id": "yaml-unknown-top-level-key", "fault": "unknown top-level key `optimiser:`",
     "setup": tiny_edited(lambda raw: raw.update(optimiser="adam")),
     "command": mochapy_run(), "expect": "unknown top-level field 'optimiser'"},
    {"id": "yaml-unknown-layer-field", "fault": "misspelt layer field `outputdim`",
     "setup": tiny_edited(lambda raw: layer(raw, "hidden").update(outputdim=3)),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "layer 'hidden'"},
    {"id": "yaml-wrong-type", "fault": "`output_dim: sixteen` (a string for an integer)",
     "setup": tiny_edited(lambda raw: layer(raw, "hidden").update(output_dim="sixteen")),
     "command": mochapy_run(), "expect": "'output_dim' must be an integer"},
    {"id": "yaml-list-for-a-number", "fault": "`base_lr: [0.1]` (a list for a number)",
     "setup": tiny_edited(lambda raw: raw["solver"].update(base_lr=[0.1])),
     "command": mochapy_run(), "expect": "solver.base_lr"},
    {"id": "yaml-nan-number", "fault": "`base_lr: .nan`",
     "setup": tiny_edited(lambda raw: raw["solver"].update(base_lr=float("nan"))),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "solver.base_lr"},
    {"id": "yaml-list-as-layer-type", "fault": "`type: [InnerProduct]` (unhashable type name)",
     "setup": tiny_edited(lambda raw: layer(raw, "out").update(type=["InnerProduct"])),
     "command": mochapy_run(), "expect": "layers[2]: unknown layer type"},
    {"id": "yaml-unknown-layer-type", "fault": "unknown layer type `Convolution`",
     "setup": tiny_edited(lambda raw: layer(raw, "out").update(type="Convolution")),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "unknown layer type 'Convolution'"},
    {"id": "yaml-unknown-neuron", "fault": "unknown neuron `Softplus`",
     "setup": tiny_edited(lambda raw: layer(raw, "hidden").update(neuron="Softplus")),
     "command": mochapy_run(), "expect": "unknown neuron 'Softplus'"},
    {"id": "yaml-cycle", "fault": "a cycle: `hidden` reads `pred`, which `out` makes from `h`",
     "setup": tiny_edited(_cycle), "command": [*MOCHAPY, "check", "net.yaml"],
     "expect": "cycle"},
    {"id": "yaml-missing-blob", "fault": "a layer reads blob `hh`, which no layer makes",
     "setup": tiny_edited(lambda raw: layer(raw, "out").update(bottoms=["hh"])),
     "command": mochapy_run(), "expect": "'hh'"},
    {"id": "yaml-dimension-mismatch", "fault": "the loss compares 16-wide `h` with 1-wide `y`",
     "setup": tiny_edited(lambda raw: layer(raw, "loss").update(bottoms=["h", "y"])),
     "command": mochapy_run(), "expect": "layer 'loss'"},
    {"id": "yaml-syntax-error", "fault": "a YAML syntax error (unclosed `{`)",
     "setup": lambda case, assets: write_yaml(case / "net.yaml",
                                              "name: x\nlayers: [\n  {type: HDF5Data\n"),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "net.yaml"},
    {"id": "yaml-not-a-mapping", "fault": "the file holds a list, not a mapping",
     "setup": lambda case, assets: write_yaml(case / "net.yaml", "- a\n- b\n"),
     "command": mochapy_run(), "expect": "must hold a mapping"},
    {"id": "yaml-empty-file", "fault": "an empty net file",
     "setup": lambda case, assets: write_yaml(case / "net.yaml", ""),
     "command": mochapy_run(), "expect": "net.yaml: the file must hold a mapping"},
    {"id": "yaml-binary-file", "fault": "a binary file given as the net",
     "setup": lambda case, assets: (case / "net.yaml").write_bytes(bytes(range(256))),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "net.yaml"},
    {"id": "yaml-missing-file", "fault": "the net file does not exist", "setup": None,
     "command": mochapy_run("absent.yaml"), "expect": "absent.yaml: no such file"},
    {"id": "yaml-extends-loop", "fault": "`extends` loop: a.yaml -> b.yaml -> a.yaml",
     "setup": _extends_loop, "command": mochapy_run("a.yaml"), "expect": "loops back to a.yaml"},
    {"id": "yaml-extends-missing", "fault": "`extends` names a file that does not exist",
     "setup": _extends("gone.yaml"), "command": mochapy_run(), "expect": "gone.yaml"},
    {"id": "yaml-set-unknown-layer", "fault": "`set: {hiden.output_dim: 3}` (misspelt layer)",
     "setup": _extends("tiny.yaml", set={"hiden.output_dim": 3}),
     "command": mochapy_run(), "expect": "no layer or section named 'hiden'"},
    {"id": "yaml-set-without-extends", "fault": "`set:` without `extends:`",
     "setup": tiny_edited(lambda raw: raw.update(set={"solver.max_iter": 3})),
     "command": mochapy_run(), "expect": "'set' needs 'extends'"},
    {"id": "yaml-stage-train-only-unknown-layer",
     "fault": "a stage's `train_only` names a layer the net lacks",
     "setup": tiny_edited(lambda raw: raw.update(stages=[{"name": "a", "train_only": ["hiden"]}])),
     "command": mochapy_run(), "expect": "train_only names 'hiden'"},
    {"id": "yaml-stages-missing-data", "fault": "a two-stage net whose data file is missing",
     "setup": tiny_edited(lambda raw: (layer(raw, "data").update(source="gone.h5"), raw.update(
         stages=[{"name": "a"}, {"name": "b", "train_only": ["out"]}]))),
     "command": mochapy_run(), "expect": "gone.h5"},
    {"id": "yaml-init-from-missing", "fault": "`init_from` names a run that does not exist",
     "setup": tiny_edited(lambda raw: raw.update(init_from="no_such_run")),
     "command": mochapy_run(), "expect": "no_such_run"},
    # -- nothing lost: runs ------------------------------------------------------------------------
    {"id": "run-into-a-finished-run", "fault": "`mochapy run` into a folder holding a finished run",
     "setup": copied_run(), "command": [*MOCHAPY, "run", GOOD_NET, "--out", "run", "--quiet"],
     "expect": "run already holds a run (training.json (finished, 5 iterations), weights.h5, "
               "1 snapshot); pass --resume"},
    {"id": "run-into-a-run-without-snapshots",
     "fault": "`mochapy run` into a finished run whose snapshots were deleted to save space",
     "setup": copied_run(snapshots=False),
     "command": [*MOCHAPY, "run", GOOD_NET, "--out", "run", "--quiet"],
     "expect": "run already holds a run (training.json (finished, 5 iterations), weights.h5)"},
    {"id": "run-out-holds-the-users-net", "fault": "`--out .`, the folder of the user's net.yaml",
     "setup": _user_net_in_out, "command": [*MOCHAPY, "run", "net.yaml", "--out", ".", "--quiet"],
     "expect": "net.yaml exists and no run wrote it"},
    {"id": "resume-missing-directory", "fault": "`--resume` with a misspelt `--out`",
     "setup": None, "command": [*MOCHAPY, "run", GOOD_NET, "--out", "rnu", "--resume", "--quiet"],
     "expect": "nothing to resume: rnu does not exist"},
    {"id": "resume-empty-directory", "fault": "`--resume` into an empty folder",
     "setup": lambda case, assets: (case / "run").mkdir(),
     "command": [*MOCHAPY, "run", GOOD_NET, "--out", "run", "--resume", "--quiet"],
     "expect": "nothing to resume: run holds no run"},
    {"id": "resume-snapshots-deleted", "fault": "`--resume` of a run whose snapshots were deleted",
     "setup": copied_run(snapshots=False),
     "command": [*MOCHAPY, "run", GOOD_NET, "--out", "run", "--resume", "--quiet"],
     "expect": "cannot resume run: no valid snapshot (found training.json (finished, 5 "
               "iterations), weights.h5)"},
    {"id": "resume-every-snapshot-damaged", "fault": "`--resume` when every snapshot is damaged",
     "setup": copied_run(damage=truncate),
     "command": [*MOCHAPY, "run", GOOD_NET, "--out", "run", "--resume", "--quiet"],
     "expect": "cannot resume run: no valid snapshot (found training.json (finished, 5 "
               "iterations), weights.h5, 1 snapshot; snapshot "},
    {"id": "resume-changed-solver", "fault": "`--resume` after changing the solver's base_lr",
     "setup": combined(copied_run(), toy_net_edited(
         lambda raw: raw["solver"].update(base_lr=0.01, max_iter=10))),
     "command": [*MOCHAPY, "run", "net.yaml", "--out", "run", "--resume", "--quiet"],
     "expect": "differs from snapshot 5's: solver.base_lr: 0.001 -> 0.01 (pass --allow-changed"},
    {"id": "resume-changed-data-and-batch",
     "fault": "`--resume` after changing the data file and the batch size",
     "setup": combined(copied_run(), dataset_file(name="other.h5"), toy_net_edited(
         lambda raw: layer(raw, "data").update(source="other.h5", batch_size=6))),
     "command": [*MOCHAPY, "run", "net.yaml", "--out", "run", "--resume", "--quiet"],
     "expect": "layers.data.batch_size: 4 -> 6; layers.data.source: "},
    {"id": "run-net-named-dot-dot", "fault": "`name: ..` (the run folder would be runs/..)",
     "setup": tiny_edited(lambda raw: raw.update(name="..")),
     "command": [*MOCHAPY, "run", "net.yaml", "--quiet"], "expect": "'name' must be"},
    {"id": "run-layer-named-dot-dot", "fault": "a layer named `..`",
     "setup": tiny_edited(lambda raw: layer(raw, "hidden").update(name="..")),
     "command": mochapy_run(), "expect": "layer name '..' must not contain '/'"},
    # -- bounded reading of nets and source lists -------------------------------------------------
    {"id": "yaml-duplicate-key", "fault": "`base_lr:` given twice in the solver",
     "setup": lambda case, assets: write_yaml(case / "net.yaml", yaml.safe_dump(
         tiny_raw(assets), sort_keys=False).replace("base_lr: 0.01",
                                                    "base_lr: 0.01\n  base_lr: 1")),
     "command": mochapy_run(), "expect": "key 'base_lr' given twice in one mapping"},
    {"id": "yaml-self-reference",
     "fault": "an anchor that contains itself (`layers: &l [*l]`)",
     "setup": lambda case, assets: write_yaml(case / "net.yaml", "name: x\nlayers: &l [*l]\n"),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "refers to itself"},
    {"id": "yaml-alias-bomb", "fault": "a 1 KiB net that expands to a billion values (aliases)",
     "setup": lambda case, assets: write_yaml(case / "net.yaml", _alias_bomb()),
     "command": mochapy_run(), "expect": "more than 200,000 values once its aliases"},
    {"id": "yaml-deeply-nested", "fault": "lists nested 5,000 deep",
     "setup": lambda case, assets: write_yaml(case / "net.yaml", _nested_yaml(5000)),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "net.yaml: nested"},
    {"id": "yaml-device-file", "fault": "`/dev/zero` given as the net (it never ends)",
     "setup": None, "command": [*MOCHAPY, "check", "/dev/zero"],
     "expect": "/dev/zero: not a regular file"},
    {"id": "yaml-over-size-cap",
     "fault": "a net file over the text cap (MOCHAPY_MAX_TEXT_BYTES=500)",
     "setup": tiny_edited(lambda raw: None), "env": {"MOCHAPY_MAX_TEXT_BYTES": "500"},
     "command": mochapy_run(), "expect": "more than the 500 B a text input may have"},
    {"id": "data-list-names-itself", "fault": "a source list that lists itself",
     "setup": combined(_write_list(["list.txt"]),
                       tiny_edited(lambda raw: layer(raw, "data").update(source="list.txt"))),
     "command": mochapy_run(), "expect": "source list"},
    {"id": "data-source-is-a-device", "fault": "`source: /dev/zero`",
     "setup": tiny_edited(lambda raw: layer(raw, "data").update(source="/dev/zero")),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "/dev/zero: not a regular file"},
    # -- sizes declared beyond memory -------------------------------------------------------------
    {"id": "yaml-huge-output-dim", "fault": "`output_dim: 100000000000`",
     "setup": tiny_edited(lambda raw: layer(raw, "hidden").update(output_dim=10**11)),
     "command": [*MOCHAPY, "check", "net.yaml"],
     "expect": "parameter 'hidden.weight': shape (8, 100000000000) needs"},
    {"id": "yaml-huge-batch", "fault": "`batch_size: 10000000000000`",
     "setup": tiny_edited(lambda raw: layer(raw, "data").update(batch_size=10**13)),
     "command": mochapy_run(), "expect": "layer 'data'"},
    {"id": "data-huge-declared-shape",
     "fault": "a few-KiB training file whose header declares 10^9 x 10^6 floats",
     "setup": combined(_declared_huge_hdf5,
                       tiny_edited(lambda raw: layer(raw, "data").update(source="train.h5"))),
     "command": mochapy_run(), "expect": "train.h5:x: shape (1000000000, 1000000) needs"},
    {"id": "data-over-array-cap", "fault": "training data over MOCHAPY_MAX_ARRAY_BYTES=1000",
     "setup": tiny_edited(lambda raw: None), "env": {"MOCHAPY_MAX_ARRAY_BYTES": "1000"},
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "more than MOCHAPY_MAX_ARRAY_BYTES"},
    {"id": "data-external-link", "fault": "training file whose `x` is an external link",
     "setup": combined(_external_link,
                       tiny_edited(lambda raw: layer(raw, "data").update(source="train.h5"))),
     "command": mochapy_run(), "expect": "train.h5:x is an external link to "},
    {"id": "data-external-storage", "fault": "training file whose `x` is stored in another file",
     "setup": combined(_external_storage,
                       tiny_edited(lambda raw: layer(raw, "data").update(source="train.h5"))),
     "command": mochapy_run(), "expect": "train.h5:x keeps its data in other files"},
    # -- input sanity ----------------------------------------------------------------------------
    {"id": "data-integer-images", "fault": "training inputs stored as uint8 (0-255)",
     "setup": tiny_with_training_data(x=(tiny_arrays()["x"] * 40 + 128).astype(np.uint8),
                                      y=tiny_arrays()["y"]),
     "command": mochapy_run(), "expect": "train.h5:x holds integers (uint8)"},
    {"id": "data-batch-larger-than-data", "fault": "`batch_size: 100` for 64 rows",
     "setup": combined(tiny_with_training_data(**tiny_arrays()),
                       tiny_edited(lambda raw: layer(raw, "data").update(source="train.h5",
                                                                          batch_size=100))),
     "command": mochapy_run(), "expect": "batch_size 100 is larger than the data (64 rows"},
    {"id": "solver-lr-growing-without-bound", "fault": "`lr_policy: {type: exp, gamma: 10}`",
     "setup": tiny_edited(_lr_policy({"type": "exp", "gamma": 10})),
     "command": mochapy_run(), "expect": "makes the learning rate grow without bound"},
    {"id": "solver-lr-negative-gamma", "fault": "`lr_policy: {type: step, gamma: -0.5}`",
     "setup": tiny_edited(_lr_policy({"type": "step", "gamma": -0.5, "stepsize": 10})),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "gamma: must be positive"},
    {"id": "solver-lr-inv-negative-power", "fault": "`lr_policy: {type: inv, power: -2}`",
     "setup": tiny_edited(_lr_policy({"type": "inv", "gamma": 0.1, "power": -2})),
     "command": mochapy_run(), "expect": "the inv policy needs gamma >= 0 and power >= 0"},
    {"id": "solver-lr-stages-out-of-order", "fault": "a staged policy whose stages go backwards",
     "setup": tiny_edited(_lr_policy({"type": "staged",
                                      "stages": [[300, "fixed"], [100, "fixed"]]})),
     "command": mochapy_run(), "expect": "until_iter 100 must be positive and larger"},
    # -- training data ----------------------------------------------------------------------------
    {"id": "data-list-names-missing-file", "fault": "the source list names a missing .h5",
     "setup": combined(lambda case, assets: (case / "list.txt").write_text("gone.h5\n"),
                       tiny_edited(lambda raw: layer(raw, "data").update(source="list.txt"))),
     "command": mochapy_run(), "expect": "gone.h5"},
    {"id": "data-empty-hdf5", "fault": "training file of 0 bytes",
     "setup": tiny_training_file(empty), "command": mochapy_run(), "expect": "train.h5"},
    {"id": "data-truncated-hdf5", "fault": "training file cut in half",
     "setup": tiny_training_file(truncate), "command": mochapy_run(), "expect": "train.h5"},
    {"id": "data-corrupt-hdf5", "fault": "training file with a scrambled header",
     "setup": tiny_training_file(scramble_header), "command": [*MOCHAPY, "check", "net.yaml"],
     "expect": "train.h5"},
    {"id": "data-nan", "fault": "a NaN in the training inputs",
     "setup": tiny_with_training_data(**with_value(tiny_arrays(), "x", 17, np.nan)),
     "command": mochapy_run(), "expect": "holds NaN or Inf (first in row 17)"},
    {"id": "data-inf", "fault": "an Inf in the training targets",
     "setup": tiny_with_training_data(**with_value(tiny_arrays(), "y", 3, np.inf)),
     "command": [*MOCHAPY, "check", "net.yaml"], "expect": "train.h5:y holds NaN or Inf"},
    {"id": "data-wrong-shape", "fault": "targets 2 wide where the net predicts 1",
     "setup": tiny_with_training_data(**tiny_arrays(y_cols=2)),
     "command": mochapy_run(), "expect": "layer 'loss'"},
    {"id": "data-row-counts-differ", "fault": "64 inputs but 60 targets",
     "setup": tiny_with_training_data(x=tiny_arrays()["x"], y=tiny_arrays(rows=60)["y"]),
     "command": mochapy_run(), "expect": "different row counts"},
    {"id": "data-missing-dataset", "fault": "training file without the `y` dataset",
     "setup": tiny_with_training_data(x=tiny_arrays()["x"]),
     "command": mochapy_run(), "expect": "has no dataset 'y'"},
    {"id": "data-not-numeric", "fault": "training inputs stored as strings",
     "setup": tiny_with_training_data(x=np.array([b"a"] * 64), y=tiny_arrays()["y"]),
     "command": mochapy_run(), "expect": "is not numeric"},
    # -- where runs are written --------------------------------------------------------------------
    {"id": "out-read-only", "fault": "`--out` inside a read-only folder",
     "setup": combined(read_only_folder, tiny_edited(lambda raw: None)),
     "command": [*MOCHAPY, "run", "net.yaml", "--out", "ro/run", "--quiet"], "expect": ": ro/run"},
    {"id": "out-disk-full", "fault": "`--out` on a full disk (a filled tmpfs)",
     "setup": combined(full_folder, tiny_edited(lambda raw: None)),
     "command": [*MOCHAPY, "run", "net.yaml", "--out", "full/run", "--quiet"],
     "expect": "No space left on device: full/run"},
    # -- galaxy-model: trained runs ---------------------------------------------------------------
    {"id": "run-not-a-run", "fault": "`--run` is a folder without a run", "setup":
     run_folder({}), "command": galaxy("evaluate", "--run", "run", "--data", GOOD_DATA),
     "expect": "run is not a run directory"},
    {"id": "run-missing", "fault": "`--run` does not exist", "setup": None,
     "command": galaxy("encode", "--run", "nowhere", "--data", GOOD_DATA, "--out", "z.h5"),
     "expect": "nowhere is not a run directory"},
    {"id": "run-without-weights", "fault": "a run with net.yaml but no snapshot or weights",
     "setup": run_folder({"net": copy_net_yaml}),
     "command": galaxy("encode", "--run", "run", "--data", GOOD_DATA, "--out", "z.h5"),
     "expect": "holds no valid snapshot and no weights.h5"},
    {"id": "run-damaged-snapshot-only", "fault": "a run whose only snapshot is truncated",
     "setup": run_folder({"net": copy_net_yaml, "snapshot": damaged_snapshot}),
     "command": galaxy("figures", "--run", "run", "--data", GOOD_DATA, "--out", "figs"),
     "expect": "snapshot-000000005.h5"},
    # -- galaxy-model: datasets -------------------------------------------------------------------
    {"id": "dataset-missing", "fault": "`--data` file does not exist", "setup": None,
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", "gone.h5"),
     "expect": "gone.h5: no such dataset file"},
    {"id": "dataset-empty", "fault": "`--data` file of 0 bytes",
     "setup": dataset_file(damage=empty),
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", "galaxies.h5"),
     "expect": "galaxies.h5: not a readable HDF5 file"},
    {"id": "dataset-truncated", "fault": "`--data` file cut in half",
     "setup": dataset_file(damage=truncate),
     "command": galaxy("encode", "--run", GOOD_RUN, "--data", "galaxies.h5", "--out", "z.h5"),
     "expect": "galaxies.h5"},
    {"id": "dataset-nan-pixels", "fault": "a NaN pixel in `--data`", "setup":
     dataset_file(nan_images()),
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", "galaxies.h5"),
     "expect": "NaN or Inf values (first in image 5)"},
    {"id": "dataset-wrong-image-size", "fault": "16x16 images for a net trained on 8x8",
     "setup": dataset_file(galaxy_images(side=16)),
     "command": galaxy("encode", "--run", GOOD_RUN, "--data", "galaxies.h5", "--out", "z.h5"),
     "expect": "the model takes (1, 8, 8)"},
    {"id": "dataset-wrong-rank", "fault": "images stored as (N, H, W), no band axis",
     "setup": dataset_file(galaxy_images()[:, 0]),
     "command": galaxy("figures", "--run", GOOD_RUN, "--data", "galaxies.h5", "--out", "figs"),
     "expect": "must have shape (N, C, S, S)"},
    {"id": "dataset-unknown-builtin", "fault": "`--data builtin:nope`", "setup": None,
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", "builtin:nope"),
     "expect": "unknown built-in data split 'builtin:nope'"},
    # -- galaxy-model: outputs --------------------------------------------------------------------
    {"id": "encode-out-read-only", "fault": "`encode --out` inside a read-only folder",
     "setup": read_only_folder,
     "command": galaxy("encode", "--run", GOOD_RUN, "--data", GOOD_DATA, "--out", "ro/z.h5"),
     "expect": ": ro/z.h5"},
    {"id": "encode-out-disk-full", "fault": "`encode --out` on a full disk",
     "setup": full_folder,
     "command": galaxy("encode", "--run", GOOD_RUN, "--data", GOOD_DATA, "--out", "full/z.h5"),
     "expect": "No space left on device: full/z.h5"},
    {"id": "figures-out-read-only", "fault": "`figures --out` inside a read-only folder",
     "setup": read_only_folder,
     "command": galaxy("figures", "--run", GOOD_RUN, "--data", GOOD_DATA, "--out", "ro/figs"),
     "expect": ": ro/figs"},
    {"id": "evaluate-json-disk-full", "fault": "`evaluate --json` on a full disk",
     "setup": full_folder,
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", GOOD_DATA, "--json",
                       "full/metrics.json"),
     "expect": "No space left on device: full/metrics.json"},
    # -- nothing lost: galaxy-model outputs ------------------------------------------------------
    {"id": "encode-out-is-its-data", "fault": "`encode --data x.h5 --out x.h5 --force`",
     "setup": dataset_file(),
     "command": galaxy("encode", "--run", GOOD_RUN, "--data", "galaxies.h5", "--out",
                       "galaxies.h5", "--force"),
     "expect": "galaxies.h5 is one of this command's inputs"},
    {"id": "encode-out-links-to-its-data", "fault": "`encode --out` a symlink to the data file",
     "setup": combined(dataset_file(), _symlink("z.h5", "galaxies.h5")),
     "command": galaxy("encode", "--run", GOOD_RUN, "--data", "galaxies.h5", "--out", "z.h5",
                       "--force"),
     "expect": "z.h5 is one of this command's inputs (the same file as galaxies.h5)"},
    {"id": "encode-out-into-the-run", "fault": "`encode --out RUN/weights.h5 --force`",
     "setup": copied_run(),
     "command": galaxy("encode", "--run", "run", "--data", GOOD_DATA, "--out", "run/weights.h5",
                       "--force"),
     "expect": "run/weights.h5 is one of this command's inputs"},
    {"id": "encode-out-exists", "fault": "`encode --out` a file that exists",
     "setup": _file("z.h5"),
     "command": galaxy("encode", "--run", GOOD_RUN, "--data", GOOD_DATA, "--out", "z.h5"),
     "expect": "z.h5 exists; pass --force to replace it"},
    {"id": "prepare-out-is-its-input", "fault": "`prepare cutouts/ --out cutouts/a.h5 --force`",
     "setup": lambda case, assets: (case / "cutouts").mkdir() or write_h5(
         case / "cutouts" / "a.h5", data=galaxy_images(side=40)),
     "command": galaxy("prepare", "cutouts", "--out", "cutouts/a.h5", "--force"),
     "expect": "cutouts/a.h5 is one of this command's inputs"},
    {"id": "prepare-out-exists", "fault": "`prepare --out` a file that exists",
     "setup": combined(fits_file(), _file("out.h5")),
     "command": galaxy("prepare", "galaxy.fits", "--out", "out.h5"),
     "expect": "out.h5 exists; pass --force"},
    {"id": "synth-out-exists", "fault": "`synth --out` a file that exists",
     "setup": _file("sky.h5"), "command": galaxy("synth", "--n", "2", "--out", "sky.h5"),
     "expect": "sky.h5 exists; pass --force"},
    {"id": "montage-out-is-its-data", "fault": "`montage x.h5 --out x.h5 --force`",
     "setup": dataset_file(),
     "command": galaxy("montage", "galaxies.h5", "--out", "galaxies.h5", "--force"),
     "expect": "galaxies.h5 is one of this command's inputs"},
    {"id": "evaluate-json-exists", "fault": "`evaluate --json` a file that exists",
     "setup": _file("metrics.json"),
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", GOOD_DATA, "--json",
                       "metrics.json"),
     "expect": "metrics.json exists; pass --force"},
    {"id": "figures-out-not-empty", "fault": "`figures --out` a folder that holds files",
     "setup": _file("figs/notes.txt"),
     "command": galaxy("figures", "--run", GOOD_RUN, "--data", GOOD_DATA, "--out", "figs"),
     "expect": "figs exists and is not empty; pass --force"},
    {"id": "figures-fail-half-way", "fault": "`figures` on 3 images: the t-SNE (2nd figure) fails",
     "setup": dataset_file(galaxy_images(3)),
     "command": galaxy("figures", "--run", GOOD_RUN, "--data", "galaxies.h5", "--out", "figs"),
     "expect": "for a t-SNE"},
    # -- galaxy-model: dataset sanity -------------------------------------------------------------
    {"id": "dataset-integer-images", "fault": "`--data` images stored as uint8 0-255",
     "setup": dataset_file(_integer_images()),
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", "galaxies.h5"),
     "expect": "`data` holds uint8 values, not normalised floats"},
    {"id": "dataset-zero-scale", "fault": "a dataset whose `scale` is 0 for one image",
     "setup": _dataset_with(scale=np.array([1.0] * 4 + [0.0] + [1.0] * 7, np.float32)),
     "command": galaxy("encode", "--run", GOOD_RUN, "--data", "galaxies.h5", "--out", "z.h5"),
     "expect": "`scale` must be positive and finite (image 4 has 0.0)"},
    {"id": "dataset-nan-scale", "fault": "a dataset whose `scale` is NaN for one image",
     "setup": _dataset_with(scale=np.array([1.0] * 11 + [np.nan], np.float32)),
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", "galaxies.h5"),
     "expect": "`scale` must be positive and finite (image 11 has nan)"},
    {"id": "dataset-external-link", "fault": "`--data` whose `data` is an external link",
     "setup": _dataset_external_link,
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", "galaxies.h5"),
     "expect": "galaxies.h5:data is an external link"},
    {"id": "dataset-huge-declared-shape",
     "fault": "a few-KiB `--data` whose header declares 10^8 images of 512 x 512",
     "setup": lambda case, assets: h5py.File(case / "galaxies.h5", "w").create_dataset(
         "data", shape=(10**8, 1, 512, 512), dtype=np.float32, chunks=(1, 1, 64, 64)).file.close(),
     "command": galaxy("evaluate", "--run", GOOD_RUN, "--data", "galaxies.h5"),
     "expect": "galaxies.h5:data: shape (100000000, 1, 512, 512) needs"},
    {"id": "prepare-fits-decompression-bomb",
     "fault": "a tile-compressed FITS that decompresses to 50000 x 50000",
     "setup": _fits_bomb, "command": galaxy("prepare", "bomb.fits", "--out", "out.h5"),
     "expect": "HDU 1 declares 2,500,000,000 pixels"},
    {"id": "prepare-hdf5-external-link", "fault": "`prepare` of an HDF5 file with an external link",
     "setup": _dataset_external_link,
     "command": galaxy("prepare", "galaxies.h5", "--out", "out.h5"),
     "expect": "galaxies.h5:data is an external link"},
    # -- galaxy-model prepare: raw images ---------------------------------------------------------
    {"id": "prepare-missing-input", "fault": "`prepare` of a file that does not exist",
     "setup": None, "command": galaxy("prepare", "gone.fits", "--out", "out.h5"),
     "expect": "gone.fits"},
    {"id": "prepare-empty-fits", "fault": "a FITS file of 0 bytes",
     "setup": fits_file(damage=empty),
     "command": galaxy("prepare", "galaxy.fits", "--out", "out.h5"), "expect": "galaxy.fits"},
    {"id": "prepare-truncated-fits", "fault": "a FITS file cut in half",
     "setup": fits_file(damage=truncate),
     "command": galaxy("prepare", "galaxy.fits", "--out", "out.h5"), "expect": "galaxy.fits"},
    {"id": "prepare-corrupt-fits", "fault": "a FITS file with a scrambled header",
     "setup": fits_file(damage=scramble_header),
     "command": galaxy("prepare", "galaxy.fits", "--out", "out.h5"), "expect": "galaxy.fits"},
    {"id": "prepare-all-nan-fits", "fault": "a FITS image of NaN only",
     "setup": fits_file(np.full((40, 40), np.nan)),
     "command": galaxy("prepare", "galaxy.fits", "--out", "out.h5"), "expect": "galaxy.fits"},
    {"id": "prepare-tiny-fits", "fault": "a 4x4 FITS image",
     "setup": fits_file(np.ones((4, 4))),
     "command": galaxy("prepare", "galaxy.fits", "--out", "out.h5"), "expect": "galaxy.fits"},
    {"id": "prepare-corrupt-hdf5", "fault": "an HDF5 input with a scrambled header",
     "setup": dataset_file(damage=scramble_header, name="cutouts.h5"),
     "command": galaxy("prepare", "cutouts.h5", "--out", "out.h5"), "expect": "cutouts.h5"},
    {"id": "prepare-out-read-only", "fault": "`prepare --out` inside a read-only folder",
     "setup": combined(fits_file(), read_only_folder),
     "command": galaxy("prepare", "galaxy.fits", "--out", "ro/out.h5"), "expect": ": ro/out.h5"},
    {"id": "prepare-out-disk-full", "fault": "`prepare --out` on a full disk",
     "setup": combined(fits_file(), full_folder),
     "command": galaxy("prepare", "galaxy.fits", "--out", "full/out.h5"),
     "expect": "No space left on device: full/out.h5"},
]


# -- running them ---------------------------------------------------------------------------------
@dataclass
class Observation:
    case: dict[str, Any]
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    new_files: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    skipped: str | None = None
    folders: tuple[str, ...] = ()  # where it ran, and the assets: left out of the table

    @property
    def error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[0] if lines else ""

    def problems(self) -> list[str]:
        """What falls short of the promise: exit 2, one `error:` line naming the culprit, no
        traceback, nothing left behind, inputs untouched."""
        found = []
        if self.returncode != 2:
            found.append(f"exit code {self.returncode}")
        lines = self.stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("error: "):
            found.append(f"stderr is not one `error:` line: {self.stderr!r}")
        elif self.case["expect"] not in lines[0]:
            found.append(f"{self.case['expect']!r} not in {lines[0]!r}")
        if "Traceback" in self.stderr + self.stdout:
            found.append("a traceback")
        if self.new_files:
            found.append(f"left behind: {', '.join(self.new_files)}")
        if self.changed_files:
            found.append(f"changed or removed: {', '.join(self.changed_files)}")
        return found


def file_states(*folders: Path) -> dict[str, str]:
    """Every file and folder under `folders`: folders as 'dir', files by their SHA-256."""
    states = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs:
                states[os.path.join(root, name)] = "dir"
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    states[path] = hashlib.sha256(handle.read()).hexdigest()
    return states


def environment(assets: Path) -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "default",
            "GALAXY_MODEL_CACHE": str(assets / "cache"), "MPLBACKEND": "Agg",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def run_case(case: dict[str, Any], assets: Path, workdir: Path) -> Observation:
    """Stage the case in workdir/<id>, run its command there, and compare the files before and
    after (the case's folder and the shared assets)."""
    folder = workdir / case["id"]
    folder.mkdir()
    observation = Observation(case, folders=(f"{folder}/", f"{assets}/"))
    try:
        cleanup = case["setup"](folder, assets) if case["setup"] else None
    except CaseSkipped as exc:
        observation.skipped = str(exc)
        return observation
    try:
        before = file_states(folder, assets)
        command = [part.replace(ASSETS, str(assets)) for part in case["command"]]
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                                timeout=TIMEOUT_S,
                                env={**environment(assets), **case.get("env", {})})
        after = file_states(folder, assets)
    finally:
        if callable(cleanup):  # a setup returns how to undo a mount or a chmod
            cleanup()
    observation.returncode = result.returncode
    observation.stdout, observation.stderr = result.stdout, result.stderr
    observation.new_files = sorted(os.path.relpath(p, folder) for p in set(after) - set(before))
    observation.changed_files = sorted(
        os.path.relpath(p, folder) for p, state in before.items() if after.get(p) != state
    )
    return observation


def run_cases(cases: list[dict[str, Any]], assets: Path, workdir: Path,
              workers: int = 3) -> dict[str, Observation]:
    """Run the cases a few at a time (they mostly wait for Python to start)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda case: run_case(case, assets, workdir), cases)
        return {observation.case["id"]: observation for observation in results}


@contextlib.contextmanager
def staged_assets() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="reliability-") as temp:
        yield build_assets(Path(temp) / "assets"), Path(temp)


# -- the table ------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """`text` as inline code, fenced with `` when it holds backticks itself."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _command_cell(case: dict[str, Any]) -> str:
    parts = list(case["command"])
    for name, entry in (("mochapy", MOCHAPY), ("galaxy-model", GALAXY_MODEL)):
        if parts[: len(entry)] == entry:
            parts = [name, *parts[len(entry):]]
    return _code(" ".join(part.replace(f"{ASSETS}/", "") for part in parts if part != "--quiet"))


def markdown_table(observations: dict[str, Observation]) -> str:
    """Fault | command | what happened (exit code, the one stderr line) | verdict."""
    rows = ["| Fault tried | Command | What happened | Verdict |", "|---|---|---|---|"]
    for observation in observations.values():
        case = observation.case
        if observation.skipped:
            happened, verdict = f"not staged: {observation.skipped}", "skipped"
        else:
            line = observation.error_line
            for prefix in observation.folders:
                line = line.replace(prefix, "")
            happened = f"exit {observation.returncode}: {_code(line)}"
            problems = observation.problems()
            verdict = "ok" if not problems else "FAIL: " + "; ".join(problems)
        rows.append(f"| {_cell(case['fault'])} | {_cell(_command_cell(case))} | "
                    f"{_cell(happened)} | {_cell(verdict)} |")
    return "\n".join(rows)


OTHER_FAULTS = [
    ("`kill -9` of `mochapy run` at 3 random moments (seeds 0-2) and once mid-snapshot-write",
     "`mochapy run --resume` continues from the newest valid snapshot and removes the "
     "half-written temporary file; final parameters, solver state, weights.h5 and every loss "
     "statistic bit-identical to an uninterrupted run", "tests/reliability/test_crash.py"),
    ("newest snapshot truncated, or bytes flipped inside it, after a `kill -9`",
     "`warning: snapshot ... skipping it` in the log; resumes from the one before, still "
     "bit-identical", "tests/reliability/test_crash.py"),
    ("NaN in a gradient while the loss stays finite (sqrt(h^2) at h = 0)",
     "exit 2: `error: training diverged at iteration 13: NaN/Inf first in layer 'root' "
     "(gradient into blob 'h2'); last good snapshot kept: run/snapshots/snapshot-000000010.h5`; "
     "that snapshot loads (--resume diverges at the same iteration)",
     "tests/reliability/test_divergence.py"),
    ("an update that makes the parameters Inf just as a snapshot is due",
     "exit 2: `error: training diverged at iteration 12: the update made parameter "
     "'hidden.weight' NaN/Inf; no snapshot written, last good snapshot kept: ...`; the snapshots "
     "on disk are byte-for-byte unchanged", "tests/reliability/test_divergence.py"),
    ("a second `mochapy run` (with or without --resume) into the `--out` of a running one",
     "exit 2: `error: run directory shared is in use by pid N on HOST; wait for it or choose "
     "another --out`; the first finishes bit-identical to a run alone",
     "tests/reliability/test_concurrency.py"),
    ("two `mochapy run` into one new `--out`, started together",
     "one trains (bit-identical to a run alone), the other gets the same one-line refusal",
     "tests/reliability/test_concurrency.py"),
    ("disk full in the middle of writing a snapshot, or while rewriting a dataset (ENOSPC "
     "injected in-process)",
     "OSError naming the target file (the CLI prints it as one `error:` line); no temporary "
     "file left; earlier snapshots / the old dataset intact; after space is freed, --resume "
     "ends bit-identical", "tests/reliability/test_bad_input.py"),
    ("random YAML documents, random edits of tiny.yaml, galaxy_vae_poster.yaml and the staged "
     "galaxy_vae.yaml, random `extends`/`set`, random text (hypothesis, 4 x 200 examples)",
     "always a RunConfig or a MochaError, never another exception",
     "tests/reliability/test_fuzz.py"),
    ("snapshots damaged while training goes on (a disk error), or a snapshot file whose name "
     "claims another iteration than it holds",
     "each is set aside as NAME.damaged and reported (`warning: snapshot ... skipping it, set "
     "aside as snapshot-000000020.h5.damaged`); snapshots are chosen and pruned by the iteration "
     "they hold once verified, so a good one is never deleted while a damaged one is kept",
     "tests/engine/test_snapshots.py, tests/reliability/test_outputs.py"),
    ("`mochapy run --resume --allow-changed` after changing the solver's base_lr",
     "training goes on; training.json lists `resumed_with_changes` (`solver.base_lr: 0.01 -> "
     "0.005` from iteration 20) and the run's net.yaml is the net it now trains",
     "tests/reliability/test_outputs.py"),
    ("`mochapy run RUN/net.yaml --out RUN --resume` after editing RUN/net.yaml by hand",
     "resumes with the edited net; the hand-edited file is never rewritten",
     "tests/reliability/test_outputs.py"),
    ("loss and every gradient finite, but the float32 squared gradient norm overflows",
     "exit 2: `error: training diverged at iteration 1: every loss, gradient and parameter is "
     "finite, but the squared gradient norm overflows float32 (largest gradient ..., in "
     "'out.weight'); no snapshot yet` (no longer \"NaN/Inf first in the loss\")",
     "tests/reliability/test_divergence.py"),
    ("an HDF5Output layer with a relative filename, run and checked from another folder",
     "the file appears beside the YAML, whole, when the run ends; `mochapy check` writes "
     "nothing; a failed run leaves no temporary file", "tests/reliability/test_outputs.py"),
    ("`encode --force` over an old file, `figures --force` into a folder with other files, "
     "`evaluate` on 1 and on 3 images",
     "the output is replaced; the folder's other files stay; evaluate reports every image "
     "(summary rows only for the non-empty quartiles)", "tests/reliability/test_outputs.py"),
    ("random YAML anchors, aliases (to themselves, forward, undefined), merge keys and "
     "repeated keys; every `key: value` line of tiny.yaml given twice (hypothesis)",
     "a RunConfig or a MochaError; a repeated key is always refused, naming both lines",
     "tests/reliability/test_fuzz.py"),
    ("random HDF5 headers: rank 0-5, up to 10^30 declared elements, 9 dtypes, groups, dangling "
     "soft links, external links, external storage (hypothesis, 150 files), read by HDF5Data, "
     "galaxy datasets and `prepare` under a 1 MiB cap",
     "data or one MochaError, nothing read beyond the cap (it found `prepare` reading a "
     "declared-huge single image whole: fixed)", "tests/reliability/test_fuzz.py"),
]


def other_faults_table() -> str:
    rows = ["| Fault tried | What happens | Checked by |", "|---|---|---|"]
    rows += [f"| {_cell(fault)} | {_cell(what)} | `{test}` |" for fault, what, test in OTHER_FAULTS]
    return "\n".join(rows)


TABLE_START = "<!-- reliability tables: made by tools/reliability_table.py, do not edit -->"
TABLE_END = "<!-- end of the reliability tables -->"


def tables(observations: dict[str, Observation]) -> str:
    """Both tables as Markdown, with the counts."""
    return "\n".join([
        f"{len(OTHER_FAULTS)} faults tried by their own tests:", "", other_faults_table(), "",
        f"{len(observations)} malformed, oversized or dangerous inputs and outputs, each run "
        "through the real command:", "", markdown_table(observations)])


def write_tables(path: Path, text: str) -> None:
    """Replace what lies between TABLE_START and TABLE_END in `path` with `text`."""
    document = path.read_text()
    head, start, rest = document.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise SystemExit(f"{path} lacks the markers {TABLE_START!r} ... {TABLE_END!r}")
    path.write_text(f"{head}{TABLE_START}\n{text}\n{TABLE_END}{tail}")


def main() -> int:
    """Print the tables, or with `--write docs/reliability.md` put them into that file."""
    with staged_assets() as (assets, workdir):
        observations = run_cases(CASES, assets, workdir)
    text = tables(observations)
    if sys.argv[1:2] == ["--write"] and len(sys.argv) == 3:
        write_tables(Path(sys.argv[2]), text)
    else:
        print(text)
    failed = [o for o in observations.values() if not o.skipped and o.problems()]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
