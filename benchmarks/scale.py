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
2-worker LocalCluster (the client's peak and the largest worker's); --memory-parts picks either.
Flat memory means these do not grow with the data set's size.

Two tools for a command-line run at full size (docs/scale.md, benchmarks/results/COMMAND.md):

    python benchmarks/scale.py --record R.json --watch-rss galaxy-model encode --data big/ ...
        runs the command and appends its wall time and the peak RSS of its own process and of
        every Dask worker process it starts to R.json;
    python benchmarks/scale.py --data big/ --run RUN --compare-encode latents/ --record R.json
        encodes every shard of big/ in this one process (no Dask) and compares mean, sd and
        provenance with the sharded latents bit for bit.
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


def load_average() -> float:
    """The 1-minute load average: how contended the machine was (2 cores here)."""
    return round(os.getloadavg()[0], 2)


def tree_peaks(command: list[str]) -> dict[str, Any]:
    """Run `command` and watch its process tree: wall time, exit status, the peak RSS of the
    command's own process and of each Dask worker process it starts (a worker replaced by its
    nanny counts as another process), in MiB."""
    import psutil

    started, load_before = time.perf_counter(), load_average()
    process = subprocess.Popen(command, cwd=REPO)
    peaks: dict[int, float] = {}
    roles: dict[int, str] = {process.pid: "client"}
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            children = root.children(recursive=True)
        except psutil.Error:  # exiting
            children = []
        for child in children:
            if child.pid not in roles:
                try:
                    spawned = "spawn_main" in " ".join(child.cmdline())
                except psutil.Error:
                    continue
                roles[child.pid] = "worker" if spawned else "other"
        for pid in roles:
            try:
                peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mib(pid))
            except (OSError, StopIteration):  # gone: its last reading stands
                pass
        time.sleep(0.5)
    return {"command": " ".join(command), "status": process.returncode,
            "seconds": round(time.perf_counter() - started, 1),
            "load_average_before": load_before, "load_average_after": load_average(),
            "client_peak_mib": peaks.get(process.pid, 0.0),
            "worker_peaks_mib": [peaks[pid] for pid in roles
                                 if roles[pid] == "worker" and pid in peaks],
            "other_peaks_mib": [peaks[pid] for pid in roles
                                if roles[pid] == "other" and pid in peaks]}


def compare_encode(run: str, data: str, latents: str) -> dict[str, Any]:
    """Encode every shard of `data` in this one process (a plain loop, no Dask) and compare
    mean, sd and provenance with the sharded `latents` bit for bit."""
    from galaxy_model.latents import read_latents
    from mochapy.sharded import open_sharded

    inputs, outputs = open_sharded(data), open_sharded(latents)
    if len(inputs.shards) != len(outputs.shards):
        raise SystemExit(f"{latents}: {len(outputs.shards)} shards for {len(inputs.shards)} "
                         f"input shards")
    started, load_before = time.perf_counter(), load_average()
    same = {"mean": True, "sd": True, "provenance": True}
    images = 0
    with one_blas_thread():
        for unit in units_of(data):
            expected = encode_dataset(cached_model(run), read_unit(unit))
            got = read_latents(outputs.path(unit.index))
            same["mean"] &= np.array_equal(got.mean, expected.mean)
            same["sd"] &= np.array_equal(got.sd, expected.sd)
            same["provenance"] &= got.provenance == expected.provenance
            images += len(expected.mean)
            print(f"shard {unit.index}: {images:,} images compared, identical so far: "
                  f"{all(same.values())}", flush=True)
    seconds = time.perf_counter() - started
    return {"command": f"one-process encode of {data} compared with {latents}",
            "images": images, "seconds": round(seconds, 1),
            "images_per_s": round(images / seconds, 1),
            "load_average_before": load_before, "load_average_after": load_average(),
            "peak_rss_mib": peak_rss_mib(), "identical": same}


def record(path: str, row: dict[str, Any]) -> None:
    """Append `row` (with the time) to the report at `path`, started with the machine."""
    report = (json.loads(Path(path).read_text()) if os.path.exists(path)
              else {"machine": machine(), "rows": []})
    report["rows"].append({"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **row})
    Path(path).write_text(json.dumps(report, indent=2))
    print(json.dumps(row, indent=2))


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
        row = {"data": data, "images": manifest["n_rows"], "shards": len(manifest["shards"]),
               "bytes": sum((Path(data) / s["name"]).stat().st_size
                            for s in manifest["shards"]),
               "load_average_before": load_average()}
        if "train" in args.memory_parts:
            net = training_net(data, args.train_iters, scratch)
            row["train_iterations"] = args.train_iters
            row["train_peak_mib"], _ = child_peak(
                [str(Path(sys.executable).with_name("mochapy")), "run", str(net),
                 "--out", str(scratch / f"train-{len(rows)}"), "--quiet"])
        if "encode" in args.memory_parts:
            _, printed = child_peak([sys.executable, __file__, "--encode-memory", args.run,
                                     data, str(scratch / f"latents-{len(rows)}")])
            encoded = json.loads(printed.strip().splitlines()[-1])
            row.update({"encode_seconds": encoded["seconds"],
                        "encode_images_per_s": round(encoded["images"] / encoded["seconds"], 1),
                        "encode_client_peak_mib": encoded["client_peak_mib"],
                        "encode_worker_peak_mib": encoded["worker_peak_mib"]})
        row["load_average_after"] = load_average()
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
        cells = [f"{row[key]} MiB" if key in row else "-" for key in (
            "train_peak_mib", "encode_client_peak_mib", "encode_worker_peak_mib")]
        lines.append(f"| {row['images']:,} | {row['shards']} | {row['bytes'] / 1e9:.2f} GB | "
                     f"{' | '.join(cells)} | {row.get('encode_images_per_s', '-')} |")
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
    parser.add_argument("--memory-parts", nargs="+", choices=("train", "encode"),
                        default=["train", "encode"], help="What the memory table measures.")
    parser.add_argument("--compare-encode", metavar="LATENTS",
                        help="Encode --data in one process and compare with these latents.")
    parser.add_argument("--record", metavar="JSON",
                        help="Append the rows of --watch-rss, --compare-encode or the memory "
                             "table to this report.")
    parser.add_argument("--watch-rss", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="Run COMMAND (the rest of the line); its and its workers' peaks.")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", help="Write the report here.")
    parser.add_argument("--force", action="store_true", help="Replace the --json file.")
    parser.add_argument("--encode-memory", nargs=3, metavar=("RUN", "DATA", "OUT"),
                        help=argparse.SUPPRESS)  # the child process of the memory table
    args = parser.parse_args(argv)
    if args.encode_memory:
        encode_memory(*args.encode_memory)
        return 0
    if (args.watch_rss or args.compare_encode) and not args.record:
        parser.error("--watch-rss and --compare-encode need --record JSON")
    if args.watch_rss or args.compare_encode:
        row = (tree_peaks(args.watch_rss) if args.watch_rss
               else compare_encode(args.run, args.data, args.compare_encode))
        record(args.record, row)
        return 0 if row.get("status", 0) == 0 else 1
    if args.json:
        claim_output(args.json, force=args.force)
    report: dict[str, Any] = {"machine": machine(), "run": args.run, "data": args.data,
                              "storage": "float32 data and ivar, uint8 mask (today's schema)"}
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_SCRATCH")) as scratch:
        report["throughput"] = ([] if args.skip_throughput
                                else measure_throughput(args, Path(scratch)))
        report["memory"] = measure_memory(args, Path(scratch))
    print(markdown(report))
    for row in report["memory"] if args.record else []:
        record(args.record, row)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
