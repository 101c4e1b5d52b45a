"""encode and evaluate shard-parallel on Dask: the exact one-process answer (latents bit for bit,
the evaluate summary with its per-quartile table equal, the Sérsic comparison too), a killed job
resumed without redoing finished shards, a killed worker process retried with identical results,
an unreachable scheduler named in one line, and the commands end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from galaxy_model import cluster
from galaxy_model.cluster import ClusterError, dask_client, one_blas_thread
from galaxy_model.dataset import GalaxyDataset, read_dataset, write_dataset
from galaxy_model.evaluation import evaluate
from galaxy_model.latents import encode_dataset, read_latents
from galaxy_model.model import GalaxyVAE
from galaxy_model.shards import JOB_NAME, write_in_shards
from galaxy_model.survey import encode_survey, evaluate_survey
from galaxy_model.synth import synthesize
from mochapy.errors import DataError
from mochapy.outputs import OutputError
from mochapy.sharded import MANIFEST_NAME, open_sharded

REPO = Path(__file__).resolve().parents[2]
RUN = str(REPO / "results" / "galaxy_vae_full")


@pytest.fixture(scope="module")
def galaxies() -> GalaxyDataset:
    return synthesize(130, seed=7)


@pytest.fixture(scope="module")
def model() -> GalaxyVAE:
    return GalaxyVAE.load(RUN)


def sharded(folder: Path, dataset: GalaxyDataset, shard_size: int) -> str:
    write_in_shards(str(folder), [dataset], shard_size)
    return str(folder)


def sharded_latents(folder: str) -> np.ndarray:
    manifest = open_sharded(folder)
    return np.concatenate([read_latents(manifest.path(i)).mean
                           for i in range(len(manifest.shards))])


def test_encode_on_shards_is_the_one_process_answer(tmp_path: Path, threaded_dask, galaxies,
                                                    model) -> None:
    with one_blas_thread():
        expected = encode_dataset(model, galaxies)
    data = sharded(tmp_path / "big", galaxies, 45)
    count = encode_survey(lambda: nullcontext(threaded_dask), RUN, data, str(tmp_path / "latents"),
                          progress=False)
    assert count == 130
    np.testing.assert_array_equal(sharded_latents(str(tmp_path / "latents")), expected.mean)
    write_dataset(tmp_path / "one.h5", galaxies)  # one file, cut into row ranges as tasks
    encode_survey(lambda: nullcontext(threaded_dask), RUN, str(tmp_path / "one.h5"),
                  str(tmp_path / "z.h5"), shard_size=60, progress=False)
    latents = read_latents(str(tmp_path / "z.h5"))
    np.testing.assert_array_equal(latents.sd, expected.sd)
    assert latents.provenance == galaxies.provenance


def test_evaluate_on_shards_reduces_to_the_one_process_summary(tmp_path: Path, threaded_dask,
                                                               galaxies, model) -> None:
    data = sharded(tmp_path / "big", galaxies, 45)
    with one_blas_thread():
        expected = evaluate(model, galaxies, label=data).summary
    parts = tmp_path / "ev.json.parts"
    summary = evaluate_survey(lambda: nullcontext(threaded_dask), RUN, data, str(parts),
                              progress=False)
    assert summary == expected
    assert len(summary["by_baseline_misfit"]) == 4
    again = evaluate_survey(lambda: nullcontext(threaded_dask), RUN, data, str(parts),
                            progress=False)
    assert again == expected  # from the kept parts: nothing recomputed, the same numbers


def test_an_interrupted_encode_resumes_keeping_finished_shards(tmp_path: Path, threaded_dask,
                                                               galaxies, model) -> None:
    data = Path(sharded(tmp_path / "big", galaxies, 30))
    good = (data / "shard-00002.h5").read_bytes()
    with open(data / "shard-00002.h5", "r+b") as handle:  # corrupt: the job stops there
        handle.seek(-64, os.SEEK_END)
        handle.write(b"\xff" * 64)
    out = tmp_path / "latents"
    with pytest.raises(DataError, match="shard-00002.h5: checksum differs"):
        encode_survey(lambda: nullcontext(threaded_dask), RUN, str(data), str(out), progress=False)
    assert (out / JOB_NAME).exists() and not (out / MANIFEST_NAME).exists()
    finished = {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)
                if name.startswith("shard-")}
    assert finished and "shard-00002.h5" not in finished
    (data / "shard-00002.h5").write_bytes(good)
    encode_survey(lambda: nullcontext(threaded_dask), RUN, str(data), str(out), progress=False)
    assert all((out / name).stat().st_mtime_ns == time for name, time in finished.items())
    with one_blas_thread():
        np.testing.assert_array_equal(sharded_latents(str(out)),
                                      encode_dataset(model, galaxies).mean)
    assert not (out / JOB_NAME).exists()


def test_the_sersic_baseline_on_shards_is_the_one_process_answer(tmp_path: Path, threaded_dask,
                                                                 model) -> None:
    galaxies = synthesize(24, seed=9)  # few images: the Sérsic fit is the slow part
    data = sharded(tmp_path / "big", galaxies, 10)
    both = ("gaussian", "sersic")
    with one_blas_thread():
        expected = evaluate(model, galaxies, label=data, baselines=both).summary
    summary = evaluate_survey(lambda: nullcontext(threaded_dask), RUN, data,
                              str(tmp_path / "ev.json.parts"), progress=False, baselines=both)
    assert summary == expected
    assert summary["comparisons"]["sersic"]["unweighted"]["all"]["n_images"] == 24
    with pytest.raises(OutputError, match="unfinished job with other inputs"):  # not its parts
        evaluate_survey(lambda: nullcontext(threaded_dask), RUN, data,
                        str(tmp_path / "ev.json.parts"), progress=False)


@pytest.mark.slow
def test_a_killed_worker_is_retried_with_identical_results(tmp_path: Path, model) -> None:
    galaxies = synthesize(600, seed=11)
    data = sharded(tmp_path / "big", galaxies, 15)  # 40 tasks
    out = tmp_path / "latents"
    killed: list[int] = []
    with dask_client(workers=2, processes=True) as client:
        pids = list(client.run(os.getpid).values())

        def kill_when_work_is_under_way() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if out.exists() and any(n.startswith("shard-") for n in os.listdir(out)):
                    if not (out / MANIFEST_NAME).exists():
                        os.kill(pids[0], signal.SIGKILL)
                        killed.append(pids[0])
                    return
                time.sleep(0.002)

        killer = threading.Thread(target=kill_when_work_is_under_way)
        killer.start()
        encode_survey(lambda: nullcontext(client), RUN, data, str(out), progress=False)
        killer.join()
        assert killed, "the encode finished before a worker could be killed"
        assert pids[0] not in client.run(os.getpid).values()  # a new process replaced it
    with one_blas_thread():
        np.testing.assert_array_equal(sharded_latents(str(out)),
                                      encode_dataset(model, galaxies).mean)
    assert not [n for n in os.listdir(out) if n.startswith(".partial")]


def test_an_unreachable_scheduler_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at "
                                           "tcp://127.0.0.1:1") as caught:
        with dask_client(scheduler="tcp://127.0.0.1:1"):
            pass
    assert "\n" not in str(caught.value)
    with pytest.raises(ClusterError, match="no such scheduler file"):
        with dask_client(scheduler_file="/nonexistent/scheduler.json"):
            pass


GALAXY = Path(sys.executable).with_name("galaxy-model")


def galaxy(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(GALAXY), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_commands_write_and_read_sharded_data_on_a_local_cluster(tmp_path: Path) -> None:
    made = galaxy("synth", "--n", 60, "--seed", 5, "--shard-size", 25, "--out", "big",
                  "--workers", 2, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert len(open_sharded(str(tmp_path / "big")).shards) == 3
    encoded = galaxy("encode", "--run", RUN, "--data", "big", "--out", "latents", "--workers", 2,
                     cwd=tmp_path)
    assert encoded.returncode == 0, encoded.stderr
    with one_blas_thread():
        expected = encode_dataset(GalaxyVAE.load(RUN), read_dataset(tmp_path / "big"))
    np.testing.assert_array_equal(sharded_latents(str(tmp_path / "latents")), expected.mean)
    again = galaxy("encode", "--run", RUN, "--data", "big", "--out", "latents", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("error: latents holds a finished")
    evaluated = galaxy("evaluate", "--run", RUN, "--data", "big", "--baseline", "sersic",
                       "--workers", 2, "--json", "ev.json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    sersic = json.loads((tmp_path / "ev.json").read_text())["comparisons"]["sersic"]
    assert sersic["unweighted"]["all"]["n_images"] == 60
    assert not (tmp_path / "ev.json.parts").exists()  # the summary is written: parts dropped
    unreachable = galaxy("evaluate", "--run", RUN, "--data", "big", "--scheduler",
                         "tcp://127.0.0.1:1", cwd=tmp_path)
    assert unreachable.returncode == 2
    assert unreachable.stderr.strip().splitlines() == [unreachable.stderr.strip()]
    assert "tcp://127.0.0.1:1" in unreachable.stderr and "Traceback" not in unreachable.stderr
