"""Hinz et al.'s Table 1 on our data: the resolution ladder against all evaluations at the
final resolution, per search strategy, over several seeds.

Each (strategy, schedule, seed) is one real evores run (``python -m evores.run`` in a
subprocess, so its CPU seconds are measured from the operating system's accounting of that
process tree and a crash stays inside it). Both schedules get the same total number of
evaluations, the same final retraining at the final resolution and the same test split; the
ladder splits its evaluations over the resolutions like Hinz (750/500/250: weights n..1).

Every run has its own directory under ``--out``: a run with ``summary.json`` and
``<run>.cost.json`` beside it is finished and skipped on a rerun; an unfinished one is
continued with ``--resume``, and the CPU and wall seconds of all its attempts are added. So a
cut-off study loses nothing: run the same command again.

Prints one table (per strategy and schedule: CPU and wall seconds of the whole run, best
validation accuracy at the final resolution, test accuracy mean and spread (sample standard
deviation) over seeds, and the ladder's cost ratio and accuracy difference against the full
schedule) and the measured Spearman of every ladder transition; writes ``study.json`` (every
figure) and ``study.png``.

    python experiments/iis_study.py --out runs/iis-study --jobs 2

CPU seconds are the robust cost figure: they do not grow when other work shares the machine;
wall seconds do. Sizing of the defaults: see SIZING below. A study killed outright (SIGKILL)
loses the cost figures of the attempts it was waiting on; their runs still resume.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from evores.config import EMBEDDED_SPACE

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "imagenette224"
SCHEDULES = ("ladder", "full")
COST_SUFFIX = ".cost.json"  # beside the run directory, which evores wants empty at start

# SIZING, measured on imagenette224 (2,550 train images after the validation split), the cut
# search ranges below, one thread per run, on the 2-core development machine while other
# work shared it (load about 6): `python -m evores.plan --cpus 2 --genomes 4 --epochs 4` timed
# 0.43 s per epoch at 16 px, 1.49 at 32 and 7.82 at 64 (the sampled genomes spread 0.22-0.81,
# 0.85-3.06, 2.95-17.4); the study's own runs (48 evaluations, population 8, 4 epochs,
# patience 2) took 1.7 CPU s per evaluation at 16 px and 4.1 at 32 (from /proc while they
# ran); one whole seed of `random` at 48 evaluations measured 151 CPU s (918 wall s) for the
# ladder and 215 CPU s (1,024 wall s) for full resolution, both runs at once. 64 px costs
# 5x 32 px, so the ladder stops at 32; at 60 evaluations a full-resolution run is then about
# 270 CPU s and a ladder run about 190 (x 1.25), 3 strategies x 2 schedules x 5 seeds about
# 6,900 CPU s: an hour on 2 free cores with --jobs 2. Four elites are carried (and retrained
# at the end) and the default probe of 8 re-evaluated beside them, so each transition's
# Spearman has up to n = 12 (less what failed); both count against the 32 px stage's 20.
# Measured since (a later, busier session): the whole default study took 10,977 CPU s and 95
# wall minutes with --jobs 2; a run averaged 264-293 CPU s on the ladder and 418-491 at full
# resolution, so the per-run estimates above are low by about 40-80 % on a loaded machine.
DEFAULTS = {
    "resolutions": [16, 32],
    "evaluations": 60,
    "seeds": 5,
    "epochs": 4,
    "patience": 2,
    "population": 8,
    "elites": 4,
}
# The search ranges are cut as for the embedded run (evores.config.EMBEDDED_SPACE), to networks
# that train in seconds on a CPU; --set space.KEY=... after these widens them again.
STUDY_SPACE = EMBEDDED_SPACE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset folder (or 'embedded')")
    p.add_argument("--strategies", default="random,ga,tpe")
    p.add_argument("--seeds", default=str(DEFAULTS["seeds"]), help="a count N (0..N-1) or a,b,c")
    p.add_argument("--evaluations", type=int, default=DEFAULTS["evaluations"],
                   help="total evaluations per run, the same for both schedules")  # fmt: skip
    p.add_argument("--resolutions", default=",".join(map(str, DEFAULTS["resolutions"])))
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="train.max_epochs")
    p.add_argument("--patience", type=int, default=DEFAULTS["patience"])
    p.add_argument("--population", type=int, default=DEFAULTS["population"])
    p.add_argument("--elites", type=int, default=DEFAULTS["elites"])
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--out", default="runs/iis-study")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="SECTION.KEY=V",
                   help="more evores overrides for every run")  # fmt: skip
    return p.parse_args(argv)


def usage_error(message: str) -> None:
    print(f"iis_study: {message}", file=sys.stderr)
    raise SystemExit(2)


def seeds_of(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        usage_error(f"--seeds {text!r} is not a count or a comma list of integers, e.g. 3 or 0,1,2")
    if len(values) == 1 and "," not in text:
        return list(range(values[0]))
    return values


def ladder_split(total: int, stages: int) -> list[int]:
    """Hinz's 3:2:1 generalised to weights n..1, rounded so the parts sum to ``total``."""
    weights = list(range(stages, 0, -1))
    parts = [total * w // sum(weights) for w in weights]
    parts[0] += total - sum(parts)
    return parts


def check_strategies(names: list[str]) -> None:
    from evores.config import STRATEGIES

    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        usage_error(
            f"strategy {', '.join(unknown)} is not in this evores (it has {', '.join(STRATEGIES)});"
            f" pass --strategies {','.join(n for n in names if n in STRATEGIES) or 'random'}"
        )


def run_overrides(args: argparse.Namespace, strategy: str, schedule: str, seed: int) -> list[str]:
    resolutions = [int(r) for r in args.resolutions.split(",")]
    if schedule == "ladder":
        evaluations = ladder_split(args.evaluations, len(resolutions))
    else:
        resolutions, evaluations = resolutions[-1:], [args.evaluations]
    values = {
        "seed": seed,
        "data.path": args.data,
        "data.cache_dir": str(Path(args.out).resolve() / "cache"),
        "schedule.resolutions": resolutions,
        "schedule.evaluations": evaluations,
        "schedule.elites": args.elites,
        "search.strategy": f'"{strategy}"',
        "search.population": args.population,
        "search.elitism": min(2, args.population - 1),
        "train.max_epochs": args.epochs,
        "train.patience": args.patience,
        "train.threads": 1,
    }
    values.update({f"space.{k}": v for k, v in STUDY_SPACE.items()})
    data = values["data.path"]
    values["data.path"] = f'"{data}"'
    values["data.cache_dir"] = f'"{values["data.cache_dir"]}"'
    return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in values.items()]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def execute(args: argparse.Namespace, strategy: str, schedule: str, seed: int) -> dict:
    """Run (or resume, or skip) one evores run; its summary plus the study's cost record."""
    run_dir = Path(args.out) / f"{strategy}-{schedule}-seed{seed}"
    cost_path = run_dir.with_name(run_dir.name + COST_SUFFIX)
    cost = read_json(cost_path) or {"attempts": []}
    summary = read_json(run_dir / "summary.json")
    if summary is None or not cost.get("finished"):
        clear_stale(run_dir)
        resume = (run_dir / "config.toml").exists()  # evores started it: continue it
        command = [sys.executable, "-m", "evores.run", "--out", str(run_dir), "--quiet"]
        command += ["--resume"] if resume else []
        for override in run_overrides(args, strategy, schedule, seed) + args.extra:
            command += ["--set", override]
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )
        started = time.monotonic()
        with open(run_dir.with_name(run_dir.name + ".log"), "ab") as log:
            child = subprocess.Popen(command, stdout=log, stderr=log, env=env)
            _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        attempt = {"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                   "wall_seconds": round(time.monotonic() - started, 3),
                   "returncode": child.returncode, "resumed": resume}  # fmt: skip
        cost["attempts"].append(attempt)
        summary = read_json(run_dir / "summary.json")
        cost["finished"] = summary is not None and child.returncode in (
            0,
            4,
        )  # 4: ended without a winner
        write_json(cost_path, cost)
        if not cost["finished"]:
            print(f"  {run_dir.name}: {last_line(log.name)}", flush=True)
        print(f"  {run_dir.name}: exit {child.returncode}, {attempt['cpu_seconds']:.0f} CPU s,"
              f" {attempt['wall_seconds']:.0f} wall s", flush=True)  # fmt: skip
    else:
        print(f"  {run_dir.name}: finished before, skipped", flush=True)
    return {"strategy": strategy, "schedule": schedule, "seed": seed, "dir": str(run_dir),
            "summary": summary if cost.get("finished") else None, "cost": cost}  # fmt: skip


def clear_stale(run_dir: Path) -> None:
    """A run cut off before evores wrote its config leaves at most its lock: remove that, so
    the run starts afresh (evores refuses a non-empty directory without a config to resume)."""
    if run_dir.is_dir() and not (run_dir / "config.toml").exists():
        if {p.name for p in run_dir.iterdir()} <= {"lock.json"}:
            (run_dir / "lock.json").unlink(missing_ok=True)


def last_line(path: str) -> str:
    lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def transition_rho(transition: dict) -> float | None:
    value = transition.get("spearman", transition.get("rank_correlation"))
    return value if isinstance(value, (int, float)) else None


def spread(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def schedule_row(strategy: str, schedule: str, mine: list[dict]) -> dict:
    """The figures of one strategy and schedule over its seeds (finished runs only)."""
    done = [r for r in mine if r["summary"]]
    cpu = [sum(a["cpu_seconds"] for a in r["cost"]["attempts"]) for r in done]
    wall = [sum(a["wall_seconds"] for a in r["cost"]["attempts"]) for r in done]
    last = [r["summary"]["stages"][-1] for r in done if r["summary"]["stages"]]
    val = [s["best_val_accuracy"] for s in last if s["best_val_accuracy"] is not None]
    test = [r["summary"]["test_accuracy"] for r in done]
    test = [t for t in test if t is not None]
    return {
        "strategy": strategy,
        "schedule": schedule,
        "runs": len(mine),
        "finished": len(done),
        "cpu_seconds": mean(cpu),
        "cpu_seconds_each": cpu,
        "wall_seconds": mean(wall),
        "wall_seconds_each": wall,
        "best_val_accuracy": mean(val),
        "test_accuracy": mean(test),
        "test_accuracy_spread": spread(test),
        "test_accuracy_each": test,
    }


def transitions_of(run: dict) -> list[dict]:
    return [
        {
            "strategy": run["strategy"],
            "seed": run["seed"],
            "from": t["from_resolution"],
            "to": t["to_resolution"],
            "spearman": transition_rho(t),
            "n": t.get("n", len(t.get("low", []))),
        }
        for t in run["summary"]["transitions"]
    ]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def aggregate(runs: list[dict], strategies: list[str]) -> dict:
    """Rows per strategy and schedule (the ladder's row carries the comparison with the full
    schedule's) and every ladder transition's Spearman."""
    rows, transitions = [], []
    for strategy in strategies:
        mine = {
            s: [r for r in runs if r["strategy"] == strategy and r["schedule"] == s]
            for s in SCHEDULES
        }
        ladder, full = (schedule_row(strategy, s, mine[s]) for s in SCHEDULES)
        ladder["cost_ratio"] = ratio(ladder["cpu_seconds"], full["cpu_seconds"])
        ladder["wall_ratio"] = ratio(ladder["wall_seconds"], full["wall_seconds"])
        has_acc = ladder["test_accuracy"] is not None and full["test_accuracy"] is not None
        difference = ladder["test_accuracy"] - full["test_accuracy"] if has_acc else None
        ladder["accuracy_difference"] = difference
        rows += [ladder, full]
        transitions += [t for r in mine["ladder"] if r["summary"] for t in transitions_of(r)]
    return {"rows": rows, "transitions": transitions}


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def table(result: dict) -> str:
    head = (f"{'strategy':<8} {'schedule':<7} {'runs':>5} {'CPU s':>8} {'wall s':>8}"
            f" {'best val':>8} {'test acc':>15} {'cost ratio':>10} {'acc diff':>9}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for row in result["rows"]:
        test = fmt(row["test_accuracy"], ".3f") + " ± " + fmt(row["test_accuracy_spread"], ".3f")
        lines.append(
            f"{row['strategy']:<8} {row['schedule']:<7} {row['finished']:>2}/{row['runs']:<2}"
            f" {fmt(row['cpu_seconds'], '.0f'):>8} {fmt(row['wall_seconds'], '.0f'):>8}"
            f" {fmt(row['best_val_accuracy'], '.3f'):>8} {test:>15}"
            f" {fmt(row.get('cost_ratio'), '.2f'):>10}"
            f" {fmt(row.get('accuracy_difference'), '+.3f'):>9}"
        )
    lines += ["", "Spearman of the carried elites and probe (low vs high px), per transition:"]
    groups: dict[tuple, list] = {}
    for t in result["transitions"]:
        groups.setdefault((t["strategy"], t["from"], t["to"]), []).append(t)
    for (strategy, low, high), items in groups.items():
        rhos = [t["spearman"] for t in items if t["spearman"] is not None]
        each = ", ".join(fmt(t["spearman"], "+.2f") for t in items)
        lines.append(f"  {strategy:<8} {low:>4} -> {high:<4} mean {fmt(mean(rhos), '+.2f')}"
                     f" (per seed: {each}; n = {items[0]['n']})")  # fmt: skip
    return "\n".join(lines)


def plot(result: dict, runs: list[dict], path: Path) -> None:
    """Left: CPU seconds against test accuracy, every run, means joined full -> ladder.
    Right: each ladder transition's Spearman per strategy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    strategies = list(dict.fromkeys(r["strategy"] for r in result["rows"]))
    for i, strategy in enumerate(strategies):
        colour = f"C{i}"
        means = {}
        for schedule, marker in zip(SCHEDULES, ("o", "s"), strict=True):
            row = next(
                r for r in result["rows"] if r["strategy"] == strategy and r["schedule"] == schedule
            )
            xs, ys = row["cpu_seconds_each"], row["test_accuracy_each"]
            if len(xs) == len(ys) and xs:
                left.scatter(xs, ys, color=colour, marker=marker, alpha=0.35)
            if row["cpu_seconds"] is not None and row["test_accuracy"] is not None:
                means[schedule] = (row["cpu_seconds"], row["test_accuracy"])
                yerr = row["test_accuracy_spread"] or 0
                left.errorbar(*means[schedule], yerr=yerr, color=colour, marker=marker,
                              markersize=9, capsize=3, label=f"{strategy} {schedule}")  # fmt: skip
        if len(means) == 2:
            (x0, y0), (x1, y1) = means["full"], means["ladder"]
            left.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": colour})
        rhos = [
            t
            for t in result["transitions"]
            if t["strategy"] == strategy and t["spearman"] is not None
        ]
        labels = sorted({f"{t['from']}->{t['to']}" for t in rhos})
        for t in rhos:
            x = labels.index(f"{t['from']}->{t['to']}") + (i - 1) * 0.15
            right.scatter([x], [t["spearman"]], color=colour)
        right.set_xticks(range(len(labels)), labels)
    left.set_xlabel("CPU seconds per run (o ladder, s full resolution)")
    left.set_ylabel("test accuracy")
    left.set_title("cost and accuracy: arrow from full resolution to the ladder")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
    right.axhline(0, color="grey", linewidth=0.5)
    right.set_ylim(-1.05, 1.05)
    right.set_ylabel("Spearman rho (elites and probe)")
    right.set_title("rank agreement across each resolution step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    strategies = [s for s in args.strategies.split(",") if s]
    check_strategies(strategies)
    seeds = seeds_of(args.seeds)
    try:
        resolutions = [int(r) for r in args.resolutions.split(",")]
    except ValueError:
        usage_error(
            f"--resolutions {args.resolutions!r} is not a comma list of pixel sizes, e.g. 16,32"
        )
    if len(resolutions) < 2 or args.evaluations < 2 * len(resolutions):
        usage_error("the ladder needs at least two --resolutions and --evaluations >= 2 per stage")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = [(s, sch, seed) for seed in seeds for s in strategies for sch in SCHEDULES]
    print(f"{len(plan)} runs, {args.jobs} at a time, in {out}", flush=True)
    # Build the dataset cache once, before any run, so its cost falls on no run and two
    # runs never build it at once.
    prepare_cache(args, resolutions)
    stopping = threading.Event()  # Ctrl-C: the runs going checkpoint; start no more

    def job(item: tuple) -> dict | None:
        return None if stopping.is_set() else execute(args, *item)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        try:
            runs = list(pool.map(job, plan))
        except KeyboardInterrupt:
            stopping.set()
            print("iis_study: interrupted; run the same command again to continue", flush=True)
            return 130
    result = aggregate(runs, strategies)
    result["settings"] = {k: v for k, v in vars(args).items()}
    result["settings"]["seeds"] = seeds
    result["runs"] = [
        {k: r[k] for k in ("strategy", "schedule", "seed", "dir", "cost")} for r in runs
    ]
    write_json(out / "study.json", result)
    print(table(result))
    plot(result, runs, out / "study.png")
    print(f"wrote {out / 'study.json'} and {out / 'study.png'}")
    return 0 if all(r["summary"] for r in runs) else 1


def prepare_cache(args: argparse.Namespace, resolutions: list[int]) -> None:
    from evores.data.cache import open_cache

    open_cache(args.data, resolutions, cache_dir=Path(args.out).resolve() / "cache")


if __name__ == "__main__":
    sys.exit(main())
