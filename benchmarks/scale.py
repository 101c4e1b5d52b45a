"""Survey-scale throughput and memory: shard-parallel prepare, encode and evaluate on Dask, and
peak memory of training and encoding as the data set grows.

    python benchmarks/scale.py --data big/ --run results/galaxy_vae_full \
        [--rss-data big20k/ big/] [--json benchmarks/results/scale-NAME.json]

Throughput (images/s) of each command at 1 and 2 Dask workers (a LocalCluster of processes)
against a plain loop over the same shards in one process: encode on --data's first
--encode-images rows, evaluate on --evaluate-images, prepare on --prepare-files FITS files written
from --data's images; each in its own shards of --shard-size rows in a scratch folder, so every
configuration does the same work.

Peak RSS for every sharded data set of --rss-data (each measured in a fresh process): training
the poster's net for --train-iters iterations streaming from it, and encoding all of it on a
2-worker LocalCluster (the client's peak and the largest worker's). Flat memory means these do
not grow with the data set's size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from iters_per_sec import machine  # noqa: E402

from galaxy_model.cluster import (  # noqa: E402
    cached_model,
    dask_client,
    one_blas_thread,
    read_unit,
    units_of,
)
from galaxy_model.dataset import read_dataset  # noqa: E402
from galaxy_model.latents import encode_dataset  # noqa: E402
from galaxy_model.shards import write_in_shards  # noqa: E402
from galaxy_model.survey import (  # noqa: E402
    encode_survey,
    evaluate_survey,
    group_files,
    prepare_survey,
)
from mochapy.outputs import claim_output  # noqa: E402

WORKER_COUNTS = (1, 2)


def kib_to_mib(kib: float) -> float:
    return round(kib / 1024, 1)


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's own peak RSS (VmHWM, MiB). Not getrusage's ru_maxrss: on Linux that carries
    over a parent's size through fork and exec, so a child of a large process would report it."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return kib_to_mib(float(line.split()[1]))


# ------------------------------------------------------------------------------- throughput


def plain_encode(run: str, data: str) -> None:
    with one_blas_thread():
        for unit in units_of(data):
            encode_dataset(cached_model(run), read_unit(unit))


def plain_evaluate(run: str, data: str) -> None:
    from galaxy_model.evaluation import evaluate

    with one_blas_thread():
        for unit in units_of(data):
            evaluate(cached_model(run), read_unit(unit), first_row=unit.first_row)


def plain_prepare(files: list[str], shard_size: int) -> None:
    from galaxy_model.prepare import prepare

    for group in group_files(files, shard_size):
        prepare(list(group.files))


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def throughput(name: str, images: int, plain, on_cluster) -> dict[str, Any]:
    """images/s of `plain()` in this process and of `on_cluster(client_factory, scratch)` at 1
    and 2 workers (cluster start-up is not counted: the cluster is up before the clock starts)."""
    row = {"command": name, "images": images, "plain_loop": round(images / timed(plain), 1)}
    for workers in WORKER_COUNTS:
        with dask_client(workers=workers) as client, tempfile.TemporaryDirectory() as scratch:
            client.run(lambda: None)  # workers up and importable
            seconds = timed(lambda: on_cluster(lambda: nullcontext(client), scratch))
        row[f"dask_{workers}_workers"] = round(images / seconds, 1)
        print(f"{name}: {workers} worker(s) {row[f'dask_{workers}_workers']} images/s",
              flush=True)
    return row


def write_fits_inputs(dataset, folder: Path) -> list[str]:
    """One FITS file per image, in raw units (what a survey cutout service hands out)."""
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(len(dataset)):
        path = folder / f"cutout{index:05d}.fits"
        fits.PrimaryHDU(dataset.denormalise(index)[0].astype(np.float32)).writeto(path)
        paths.append(str(path))
    return paths


def measure_throughput(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    rows = []
    encode_data = str(scratch / "encode")
    write_in_shards(encode_data, [read_dataset(args.data, limit=args.encode_images)],
                    args.shard_size)
    rows.append(throughput(
        "encode", args.encode_images, partial(plain_encode, args.run, encode_data),
        lambda cluster, out: encode_survey(cluster, args.run, encode_data,
                                           os.path.join(out, "latents"), progress=False)))
    evaluate_data = str(scratch / "evaluate")
    small = read_dataset(args.data, limit=args.evaluate_images)
    write_in_shards(evaluate_data, [small], max(args.evaluate_images // 4, 1))
    rows.append(throughput(
        "evaluate", args.evaluate_images, partial(plain_evaluate, args.run, evaluate_data),
        lambda cluster, _: evaluate_survey(cluster, args.run, evaluate_data, progress=False)))
    files = write_fits_inputs(read_dataset(args.data, limit=args.prepare_files),
                              scratch / "fits")
    per_shard = max(args.prepare_files // 4, 1)
    rows.append(throughput(
        "prepare", args.prepare_files, partial(plain_prepare, files, per_shard),
        lambda cluster, out: prepare_survey(cluster, [str(scratch / "fits")],
                                            os.path.join(out, "prepared"), 69, 1, per_shard,
                                            progress=False)))
    return rows


# ----------------------------------------------------------------------------------- memory


def child_peak(command: list[str]) -> tuple[float, str]:
    """Run `command`; (its peak RSS in MiB, read from /proc until it exits, and its stdout)."""
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, stdout=output, text=True, cwd=REPO)
        peak = 0.0
        while process.poll() is None:
            try:
                peak = max(peak, peak_rss_mib(process.pid))
            except (OSError, StopIteration):  # exiting: its memory is already gone
                pass
            time.sleep(0.2)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed (status {process.returncode})")
        output.seek(0)
        return peak, output.read()


def training_net(data: str, iterations: int, folder: Path) -> Path:
    """The poster's net streaming from `data`, without validation, snapshots or report."""
    net = yaml.safe_load((REPO / "examples" / "galaxy_vae_poster.yaml").read_text())
    net["layers"][0]["source"] = os.path.abspath(data)
    net["backend"] = "cpu"
    net["solver"]["max_iter"] = iterations
    net["coffee_breaks"] = {"training_summary": {"every": iterations}}
    net.pop("report", None)
    path = folder / "stream.yaml"
    path.write_text(yaml.safe_dump(net))
    return path


def encode_memory(run: str, data: str, out: str) -> None:
    """(Child process) encode `data` on 2 workers; print the peaks as JSON."""
    with dask_client(workers=2) as client:
        started = time.perf_counter()
        count = encode_survey(lambda: nullcontext(client), run, data, out, progress=False)
        seconds = time.perf_counter() - started
        workers = client.run(peak_rss_mib)
    print(json.dumps({"images": count, "seconds": round(seconds, 1),
                      "client_peak_mib": peak_rss_mib(),
                      "worker_peak_mib": max(workers.values())}))


def measure_memory(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    rows = []
    for data in args.rss_data:
        manifest = json.loads((Path(data) / "manifest.json").read_text())
        net = training_net(data, args.train_iters, scratch)
        train_peak, _ = child_peak([str(Path(sys.executable).with_name("mochapy")), "run",
                                    str(net), "--out", str(scratch / f"train-{len(rows)}"),
                                    "--quiet"])
        _, printed = child_peak([sys.executable, __file__, "--encode-memory", args.run, data,
                                 str(scratch / f"latents-{len(rows)}")])
        encoded = json.loads(printed.strip().splitlines()[-1])
        row = {"data": data, "images": manifest["n_rows"], "shards": len(manifest["shards"]),
               "bytes": sum((Path(data) / s["name"]).stat().st_size
                            for s in manifest["shards"]),
               "train_iterations": args.train_iters, "train_peak_mib": train_peak,
               "encode_seconds": encoded["seconds"],
               "encode_images_per_s": round(encoded["images"] / encoded["seconds"], 1),
               "encode_client_peak_mib": encoded["client_peak_mib"],
               "encode_worker_peak_mib": encoded["worker_peak_mib"]}
        print(row, flush=True)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    lines = ["| command | images | one process (plain loop) | Dask, 1 worker | Dask, 2 workers |",
             "|---|---:|---:|---:|---:|"]
    for row in report["throughput"]:
        lines.append(f"| {row['command']} | {row['images']:,} | {row['plain_loop']} | "
                     f"{row['dask_1_workers']} | {row['dask_2_workers']} |")
    lines += ["", "| data set | shards | on disk | training peak RSS | encode: client peak | "
              "encode: largest worker peak | encode images/s (2 workers) |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["memory"]:
        lines.append(f"| {row['images']:,} | {row['shards']} | {row['bytes'] / 1e9:.2f} GB | "
                     f"{row['train_peak_mib']} MiB | {row['encode_client_peak_mib']} MiB | "
                     f"{row['encode_worker_peak_mib']} MiB | {row['encode_images_per_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="A sharded data set to take images from.")
    parser.add_argument("--run", default=str(REPO / "results" / "galaxy_vae_full"))
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--encode-images", type=int, default=20_000)
    parser.add_argument("--evaluate-images", type=int, default=1_000)
    parser.add_argument("--prepare-files", type=int, default=400)
    parser.add_argument("--rss-data", nargs="*", default=[],
                        help="Sharded data sets of growing size for the memory table.")
    parser.add_argument("--train-iters", type=int, default=300)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", help="Write the report here.")
    parser.add_argument("--force", action="store_true", help="Replace the --json file.")
    parser.add_argument("--encode-memory", nargs=3, metavar=("RUN", "DATA", "OUT"),
                        help=argparse.SUPPRESS)  # the child process of the memory table
    args = parser.parse_args(argv)
    if args.encode_memory:
        encode_memory(*args.encode_memory)
        return 0
    if args.json:
        claim_output(args.json, force=args.force)
    report: dict[str, Any] = {"machine": machine(), "run": args.run, "data": args.data,
                              "storage": "float32 data and ivar, uint8 mask (today's schema)"}
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_SCRATCH")) as scratch:
        report["throughput"] = ([] if args.skip_throughput
                                else measure_throughput(args, Path(scratch)))
        report["memory"] = measure_memory(args, Path(scratch))
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
