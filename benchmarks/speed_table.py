"""Render a benchmarks/iters_per_sec.py JSON result as the Markdown speed tables of docs/speed.md.

    python benchmarks/speed_table.py benchmarks/results/F.json [G.json ...]   # print the tables
    python benchmarks/speed_table.py F.json [G.json ...] --update docs/speed.md

--update replaces what lies between the file's `<!-- speed-table:start -->` and
`<!-- speed-table:end -->` lines, so the document's numbers are always the committed JSON's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

START, END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"


def machine_line(report: dict[str, Any]) -> str:
    """The machine as lscpu names it, the run's settings and the load around it."""
    cpu = report["machine"]
    lscpu = cpu.get("lscpu", {})
    caches = ", ".join(f"{key} {lscpu[key]}" for key in ("L2 cache", "L3 cache") if key in lscpu)
    virtual = f", {lscpu['Hypervisor vendor']} virtual machine" if "Hypervisor vendor" in lscpu \
        else ""
    settings = report["settings"]
    threads = settings.get("threads", cpu["cores"])
    loads = (report.get("load_average_before", [None])[0],
             report.get("load_average_after", [None])[0])
    load = "" if None in loads else (f"; 1-minute load average {loads[0]:.1f} before the run and "
                                     f"{loads[1]:.1f} after (2.0 = both cores busy)")
    return (f"`{Path(report.get('source', 'the run')).name}`, {report.get('date', 'undated')}: "
            f"{lscpu.get('Model name', cpu['cpu'])}, {cpu['cores']} cores{virtual}"
            f"{', ' + caches if caches else ''}; {threads} thread{'s' if threads != 1 else ''} "
            f"per system; {settings['repeats']} interleaved rounds of about "
            f"{settings['seconds']:g} s per system{load}.")


def comparison_table(comparison: dict[str, Any]) -> str:
    """One comparison (a batch size and band count) as a Markdown table."""
    lines = [f"**Batch {comparison['batch']}, {comparison['bands']} band"
             f"{'s' if comparison['bands'] > 1 else ''}** "
             f"({comparison['gflop_per_step_in_gemm']:.3f} GFLOP of matrix products per step)", "",
             "| system | it/s (median) | lowest–highest round | images/s | × torch.compile "
             "| of GEMM ceiling | cores busy |", "|---|---|---|---|---|---|---|"]

    def ratio(value: float | None, form: str) -> str:
        return "–" if value is None else format(value, form)

    for r in comparison["rows"]:
        label = r["label"]
        if r["system"] == "gemm-ceiling":
            label += f" ({r['gemm_gflop_per_sec']:.3g} GFLOP/s)"
        bold = "**" if r["system"] == "mochapy" else ""
        lines.append(f"| {bold}{label}{bold} | {bold}{r['iters_per_sec']:.1f}{bold} | "
                     f"{r['lowest']:.1f}–{r['highest']:.1f} | {r['images_per_sec']:.0f} | "
                     f"{ratio(r['vs_torch_compile'], '.2f')} | "
                     f"{ratio(r['of_gemm_ceiling'], '.0%')} | "
                     f"{ratio(r.get('cores_busy'), '.1f')} |")
    for s in comparison["skipped"]:
        lines.append(f"| {s['system']} | skipped: {s['reason']} | | | | | |")
    return "\n".join(lines)


GOAL = {"batch": 100, "bands": 1, "vs_torch_compile": 1.2, "of_gemm_ceiling": 0.75}  # issue 21


def goal_line(report: dict[str, Any]) -> str | None:
    """Where mochapy cpu stands against the goal: at batch 100, 1 band, >= 1.2x torch.compile
    and >= 75% of the GEMM ceiling, in the same interleaved run."""
    for comparison in report["comparisons"]:
        if (comparison["batch"], comparison["bands"]) != (GOAL["batch"], GOAL["bands"]):
            continue
        row = next((r for r in comparison["rows"] if r["system"] == "mochapy"), None)
        if row is None or row["vs_torch_compile"] is None or row["of_gemm_ceiling"] is None:
            return None
        met = (row["vs_torch_compile"] >= GOAL["vs_torch_compile"]
               and row["of_gemm_ceiling"] >= GOAL["of_gemm_ceiling"])
        return (f"**Goal (batch 100, 1 band, same run): mochapy cpu >= "
                f"{GOAL['vs_torch_compile']}x torch.compile and >= "
                f"{GOAL['of_gemm_ceiling']:.0%} of the GEMM ceiling. Measured: "
                f"{row['vs_torch_compile']:.2f}x and {row['of_gemm_ceiling']:.0%}: "
                f"{'met' if met else 'not met'}.**")
    return None


def profile_table(profile: dict[str, Any]) -> str:
    """Where mochapy's step spends its time, by phase and in the matrix products."""
    step = profile["step_ms"]
    lines = [f"mochapy cpu's step at batch {profile['batch']}, {profile['bands']} band, "
             f"profiled ({profile['backend']}, {profile.get('statistic', 'mean')} of "
             f"{profile['steps']} steps): "
             f"{step:.2f} ms, of which matrix products {profile['gemm_ms']:.2f} ms "
             f"({profile['gemm_ms'] / step:.0%}).", "", "| phase | ms | share |", "|---|---|---|"]
    lines += [f"| {phase} | {value:.2f} | {value / step:.0%} |"
              for phase, value in profile["phases"].items()]
    lines += ["", "| layer | type | forward ms | backward ms | in GEMM ms |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['type']} | {r['forward_ms']:.3f} | {r['backward_ms']:.3f} | "
              f"{r['gemm_ms']:.3f} |" for r in profile["layers"]
              if r["forward_ms"] + r["backward_ms"] >= 0.01 * step]
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """The machine line, the goal's status, a table per comparison and the profile."""
    parts = [machine_line(report), goal_line(report),
             *(comparison_table(c) for c in report["comparisons"]),
             profile_table(report["profile"]) if "profile" in report else None]
    return "\n\n".join(part for part in parts if part)


def update(document: Path, tables: str) -> None:
    """Replace the text between the START and END marker lines of `document`."""
    text = document.read_text(encoding="utf-8")
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ValueError(f"{document}: no '{START}' ... '{END}' block to replace")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    document.write_text(f"{head}{START}\n{tables}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+",
                        help="JSON files written by iters_per_sec.py, rendered in this order")
    parser.add_argument("--update", type=Path, default=None,
                        help="write the tables into this Markdown file's marked block")
    args = parser.parse_args(argv)
    blocks = []
    for result in args.results:
        try:
            report = json.loads(result.read_text(encoding="utf-8"))
            report.setdefault("source", str(result))
            blocks.append(render(report))
        except (OSError, ValueError, KeyError) as error:
            print(f"error: {result}: {type(error).__name__}: {error}", file=sys.stderr)
            return 2
    tables = "\n\n---\n\n".join(blocks)
    try:
        if args.update:
            update(args.update, tables)
        else:
            print(tables)
    except (OSError, ValueError) as error:
        print(f"error: {args.update}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
