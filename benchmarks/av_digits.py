"""Benchmark on the embedded AV-digits data: each modality alone, `none`, `ogm_ge` and `aim`.

    python benchmarks/av_digits.py --jobs 2              # the committed results (5 seeds)
    python benchmarks/av_digits.py --seeds 0 --methods none aim -- --max_steps 10

Every run is one `aim-hf train` (the same data, budget and options; only the method and the seed
change) in its own child process, `--jobs` of them at a time. Then one more child process times the
methods side by side. Results go to `<output-dir>/<name>.md` (the table, the target checks, the command
and the machine), `<name>.json` (every run's metrics, memory and log history, and the step times) and
PNG plots. What is measured:

- accuracy: the fused test accuracy and each modality's probe test accuracy (the linear heads on
  detached features that `MultimodalModel` always trains), mean and sample standard deviation over
  the seeds. A unimodal run (`vision`, `audio`) blanks the other modality's input (`--only_modality`),
  so its fused accuracy is that modality's accuracy alone;
- time per optimizer step: every method trains once more (the first seed, no evaluation), all in one
  process, taking turns of a few optimizer steps, one method at a time: so every method meets
  the same machine (on a shared machine, speed drifts by half over tens of seconds, which runs one after
  another would turn into differences between methods). A step is timed from the Trainer's
  `on_step_begin` to `on_step_end` (forward, backward, the modulation's step, the optimizer step; data
  loading, logging and waiting for the turn excluded); the table reports each method's median;
- peak memory: the memory a run adds while it trains. On CPU, the child process's peak resident set
  (Linux `VmHWM`, reset through `/proc/self/clear_refs` when training begins) minus its resident set
  at that moment; on GPU, `torch.cuda.max_memory_allocated` minus the allocated memory at that moment.
  A fresh process per run keeps one run's freed memory from hiding the next run's needs.

Time and memory are reported as ratios to `none` from the same invocation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DEFAULT_METHODS = ("vision", "audio", "none", "ogm_ge", "aim", "aim:aim_min_lambda=0")
UNIMODAL = ("vision", "audio")
# Passed to every run before the user's own options (which override them).
BASE_TRAIN_OPTIONS = ["--disable_tqdm", "true", "--save_strategy", "no", "--report_to", "none"]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Timed methods take turns of this many optimizer steps: short enough that all meet the same machine
# (its speed drifts over tens of seconds), long enough that most steps run with their own model, not the
# previous turn's, in the caches (the median over steps then reflects the latter).
STEPS_PER_TURN = 5


# ------------------------------------------------------------------------------------ one run
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line.")


def _measure_callback():
    """A Trainer callback that measures the memory training adds and keeps the log history."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()

    class Measure(TrainerCallback):
        def __init__(self) -> None:
            self.log_history: list[dict[str, Any]] = []
            self.memory: dict[str, Any] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.memory = {"kind": "cuda max_memory_allocated", "baseline_bytes": torch.cuda.memory_allocated()}
            else:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current resident set
                self.memory = {"kind": "cpu VmHWM", "baseline_bytes": _rss_bytes()}

        def on_train_end(self, args, state, control, **kwargs):
            self.memory["peak_bytes"] = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()
            self.log_history = [dict(entry) for entry in state.log_history]

    return Measure()


def run_child(result_path: str, train_argv: list[str]) -> None:
    """Train once with `aim-hf train <train_argv>` and write the measurements to `result_path`."""
    from aim_hf import cli

    measure = _measure_callback()
    metrics = cli.train(*cli.parse_train_args(train_argv), callbacks=[measure])
    result = {"metrics": metrics, "memory": measure.memory, "log_history": measure.log_history}
    Path(result_path).write_text(json.dumps(result))


class Rotation:
    """Lets threads take turns, `0, 1, ..., n-1, 0, ...`: `wait_turn(i)` returns when it is thread `i`'s
    turn, which lasts until `i` calls `wait_turn` again (or `leave`). The first turn starts once every
    thread has asked for one. A thread that fails calls `leave(i, failed=True)`; the others then raise
    instead of waiting for ever."""

    def __init__(self, count: int) -> None:
        self._cond = threading.Condition()
        self._active = list(range(count))
        self._asked: set[int] = set()
        self._turn: int | None = None
        self._failed = False

    def _next(self, i: int) -> int:
        return self._active[(self._active.index(i) + 1) % len(self._active)]

    def _start_if_all_asked(self) -> None:
        if self._turn is None and self._active and self._asked >= set(self._active):
            self._turn = self._active[0]

    def wait_turn(self, i: int) -> None:
        with self._cond:
            if self._turn == i:
                self._turn = self._next(i)
            self._asked.add(i)
            self._start_if_all_asked()
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._turn == i or self._failed)
            if self._failed:
                raise RuntimeError("Another timed run failed.")

    def leave(self, i: int, failed: bool = False) -> None:
        with self._cond:
            self._failed |= failed
            if i in self._active:
                if self._turn == i:
                    self._turn = self._next(i) if len(self._active) > 1 else None
                self._active.remove(i)
            self._start_if_all_asked()
            self._cond.notify_all()


def _turn_timer(rotation: Rotation, index: int):
    """A Trainer callback that takes optimizer steps only in `index`'s turns, `STEPS_PER_TURN` a turn,
    and times them: a turn begins in `on_step_begin` (after the step's data is loaded) and lasts through
    logging and loading the next step's data, so nothing else runs while a step is timed."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()

    class TurnTimer(TrainerCallback):
        def __init__(self) -> None:
            self.step_seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step % STEPS_PER_TURN == 0:
                rotation.wait_turn(index)
            if cuda:
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.step_seconds.append(time.perf_counter() - self._start)

        def on_train_end(self, args, state, control, **kwargs):
            rotation.leave(index)

    return TurnTimer()


def time_child(result_path: str, spec_path: str) -> None:
    """Train each run of `spec_path` (a JSON list of `aim-hf train` argument lists), all in this process,
    one thread each, taking optimizer steps in turn; write each run's step times to `result_path`."""
    from aim_hf import cli

    runs = json.loads(Path(spec_path).read_text())
    rotation = Rotation(len(runs))
    timers, trainers = [], []
    for index, argv in enumerate(runs):
        model_args, data_args, training_args = cli.parse_train_args(argv)
        if training_args.gradient_accumulation_steps != 1:
            # Accelerate's gradient-sync flag is shared by the process's trainers; with one micro-batch
            # per step it is always on, whichever trainer set it last.
            raise ValueError("Timing runs in turn needs --gradient_accumulation_steps 1.")
        timers.append(_turn_timer(rotation, index))
        trainers.append(cli.build_trainer(model_args, data_args, training_args, callbacks=[timers[-1]])[0])
    errors: list[BaseException] = []

    def train(index: int) -> None:
        try:
            trainers[index].train()
        except BaseException as err:
            errors.append(err)
            rotation.leave(index, failed=True)

    threads = [threading.Thread(target=train, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    Path(result_path).write_text(json.dumps([timer.step_seconds for timer in timers]))


# ----------------------------------------------------------------------------------- methods
def method_options(spec: str) -> list[str]:
    """`aim-hf train` options of a method spec `NAME[:option=value,...]`: NAME is a modality (trained
    alone, the other input blanked) or a modulation method; e.g. `aim:aim_r_max=0.25,aim_alpha=2`."""
    name, _, extra = spec.partition(":")
    options = ["--modulation", "none", "--only_modality", name] if name in UNIMODAL else ["--modulation", name]
    for item in filter(None, extra.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Method {spec!r}: expected option=value, got {item!r}.")
        options += [f"--{key}", value]
    return options


def _run_dir(work_dir: Path, method: str) -> Path:
    return work_dir / method.replace(":", "_").replace(",", "_")


def _run_script(mode: str, args: list[str], log_path: Path, threads: int) -> None:
    """Run this script as a child `mode` with `threads` torch threads; its output goes to `log_path`."""
    with open(log_path, "w") as log:
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), mode, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
    if done.returncode != 0:
        raise RuntimeError(f"A benchmark run failed; see {log_path}.")


def run_all(
    methods: Sequence[str], seeds: Sequence[int], train_options: Sequence[str], work_dir: Path, threads: int, jobs: int
) -> dict[str, list[dict[str, Any]]]:
    """Every (seed, method) run, `jobs` at a time with `threads` torch threads each; returns the
    results by method, in seed order."""

    def one(seed: int, method: str) -> dict[str, Any]:
        run_dir = _run_dir(work_dir, method) / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        argv = [*BASE_TRAIN_OPTIONS, "--output_dir", str(run_dir / "model"), "--seed", str(seed),
                *method_options(method), *train_options]  # fmt: skip
        started = time.time()
        _run_script("_run", [str(run_dir / "result.json"), *argv], run_dir / "log.txt", threads)
        result = json.loads((run_dir / "result.json").read_text())
        result.update(seed=seed, method=method, argv=argv, wall_seconds=time.time() - started)
        # One print per run: the jobs' threads would interleave two.
        print(f"[{time.strftime('%H:%M:%S')}] {method} seed {seed} done in {result['wall_seconds']:.0f} s: "
              f"test accuracy {result['metrics']['test_accuracy']:.4f}", flush=True)  # fmt: skip
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {m: [pool.submit(one, seed, m) for seed in seeds] for m in methods}
        return {m: [future.result() for future in runs] for m, runs in futures.items()}


def time_all(
    methods: Sequence[str], seed: int, train_options: Sequence[str], work_dir: Path, threads: int
) -> dict[str, list[float]]:
    """Each method's step times from one child process that trains them all in turn (`time_child`),
    with `seed` and no evaluation; returns the step times by method."""
    runs = [
        [*BASE_TRAIN_OPTIONS, "--output_dir", str(_run_dir(work_dir, m) / "timing"), "--seed", str(seed),
         *method_options(m), *train_options, "--eval_strategy", "no", "--load_best_model_at_end", "false"]
        for m in methods
    ]  # fmt: skip
    timing_dir = work_dir / "timing"
    timing_dir.mkdir(parents=True, exist_ok=True)
    (timing_dir / "runs.json").write_text(json.dumps(runs))
    print(f"[{time.strftime('%H:%M:%S')}] timing {', '.join(methods)} in turn, seed {seed}", flush=True)
    _run_script("_time", [str(timing_dir / "result.json"), str(timing_dir / "runs.json")], timing_dir / "log.txt", threads)
    return dict(zip(methods, json.loads((timing_dir / "result.json").read_text())))


# ---------------------------------------------------------------------------------- summary
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else math.nan


def summarize(
    results: dict[str, list[dict[str, Any]]], step_seconds: dict[str, list[float]], modalities: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per method: (mean, std) of each accuracy, the median step time (of the timing run), the mean
    memory, and their ratios to `none`."""
    summary: dict[str, dict[str, Any]] = {}
    for method, runs in results.items():
        name = method.split(":")[0]
        row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
        for split in ("test", "eval"):
            row[f"{split}_fused"] = _mean_std([r["metrics"][f"{split}_accuracy"] for r in runs])
            for m in modalities:
                # A unimodal run's other probe sees a blank input: it measures nothing.
                if name not in UNIMODAL or name == m:
                    row[f"{split}_{m}"] = _mean_std([r["metrics"][f"{split}_{m}_probe_accuracy"] for r in runs])
        row["step_seconds"] = statistics.median(step_seconds[method])
        row["memory_bytes"] = statistics.fmean(r["memory"]["peak_bytes"] - r["memory"]["baseline_bytes"] for r in runs)
        row["steps"] = len(step_seconds[method])
        summary[method] = row
    if "none" in summary:
        for row in summary.values():
            row["time_ratio"] = _ratio(row["step_seconds"], summary["none"]["step_seconds"])
            row["memory_ratio"] = _ratio(row["memory_bytes"], summary["none"]["memory_bytes"])
    return summary


def check_targets(summary: dict[str, dict[str, Any]], modalities: Sequence[str]) -> list[tuple[str, bool, str]]:
    """The issue's targets, as (target, met, the numbers behind it); only those whose runs exist.
    The weak modality is the one with the lower validation accuracy alone (or, without unimodal runs,
    the lower probe validation accuracy under `none`)."""
    if not {"none", "aim"} <= summary.keys():
        return []
    none, aim = summary["none"], summary["aim"]
    alone = [m for m in modalities if m in summary]
    if len(alone) == len(modalities):
        weak = min(modalities, key=lambda m: summary[m]["eval_fused"][0])
    else:
        weak = min(modalities, key=lambda m: none[f"eval_{m}"][0])
    checks = []

    def add(target: str, met: bool, numbers: str) -> None:
        checks.append((target, met, numbers))

    a, n = aim["test_fused"][0], none["test_fused"][0]
    add("AIM fused test accuracy > none", a > n, f"{a:.4f} vs {n:.4f}")
    if "ogm_ge" in summary:
        o = summary["ogm_ge"]["test_fused"][0]
        add("AIM fused test accuracy > ogm_ge", a > o, f"{a:.4f} vs {o:.4f}")
    a, n = aim[f"test_{weak}"][0], none[f"test_{weak}"][0]
    add(f"weak modality ({weak}) probe under AIM > none", a > n, f"{a:.4f} vs {n:.4f}")
    for dominant in (m for m in modalities if m != weak):
        a, (n, spread) = aim[f"test_{dominant}"][0], none[f"test_{dominant}"]
        add(
            f"dominant modality ({dominant}) probe under AIM >= none - one seed-spread",
            a >= n - spread,
            f"{a:.4f} vs {n:.4f} - {spread:.4f}",
        )
    add("AIM time per step <= 1.5x none", aim["time_ratio"] <= 1.5, f"{aim['time_ratio']:.2f}x")
    add("AIM peak memory <= 1.5x none", aim["memory_ratio"] <= 1.5, f"{aim['memory_ratio']:.2f}x")
    if "ogm_ge" in summary:
        r = summary["ogm_ge"]["time_ratio"]
        add("OGM-GE time per step <= 1.1x none", r <= 1.1, f"{r:.2f}x")
    return checks


# ----------------------------------------------------------------------------------- report
def machine_description(load: str, threads: int) -> list[str]:
    import torch
    import transformers

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    device = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
    return [
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {device}, {platform.system()} {platform.release()}",
        f"- torch threads per run: {threads}; load average when the benchmark started: {load}",
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}",
    ]


def _cell(value: tuple[float, float] | None) -> str:
    return "—" if value is None else f"{value[0]:.4f} ± {value[1]:.4f}"


def write_report(
    path: Path,
    command: str,
    summary: dict[str, dict[str, Any]],
    checks: list[tuple[str, bool, str]],
    modalities: Sequence[str],
    train_options: Sequence[str],
    load: str,
    threads: int,
    plots: Sequence[str],
) -> None:
    seeds = next(iter(summary.values()))["seeds"]
    lines = [
        "# AV-digits benchmark",
        "",
        "Written by `benchmarks/av_digits.py`; do not edit by hand.",
        "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        *machine_description(load, threads),
        f"- seeds: {', '.join(map(str, seeds))}; every run: `aim-hf train {shlex.join([*BASE_TRAIN_OPTIONS, *train_options])}` "
        f"plus the method's options and the seed ({next(iter(summary.values()))['steps']} optimizer steps)",
        "",
        "Accuracies: test split, mean ± sample standard deviation over the seeds. A modality's row trains it",
        "alone (the other input blanked): its fused accuracy is that modality's accuracy alone. Time: median",
        f"time per optimizer step (forward, backward, modulation, optimizer) of one more run per method (seed {seeds[0]},",
        f"no evaluation), all methods in one process taking turns of {STEPS_PER_TURN} steps so that they meet the same machine.",
        "Memory: peak memory added while training (CPU: peak resident set of the run's own process minus its",
        "resident set when training began; GPU: peak allocated minus allocated), mean over seeds. Ratios are",
        "to `none` in this same invocation.",
        "",
        "| method | fused acc | " + " | ".join(f"{m} probe acc" for m in modalities)
        + " | fused acc (val) | ms / step | time × none | peak mem (MiB) | mem × none |",
        "|---" * (len(modalities) + 7) + "|",
    ]
    for method, row in summary.items():
        cells = [f"`{method}`", _cell(row["test_fused"])]
        cells += [_cell(row.get(f"test_{m}")) for m in modalities]
        cells += [_cell(row["eval_fused"]), f"{row['step_seconds'] * 1000:.1f}", f"{row.get('time_ratio', math.nan):.2f}"]
        cells += [f"{row['memory_bytes'] / 2**20:.1f}", f"{row.get('memory_ratio', math.nan):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if checks:
        lines += ["", "## Targets", "", "| target | met | numbers |", "|---|---|---|"]
        lines += [f"| {target} | {'yes' if met else 'NO'} | {numbers} |" for target, met, numbers in checks]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")


def plot_results(results: dict[str, list[dict[str, Any]]], modalities: Sequence[str], output_dir: Path, name: str) -> list[str]:
    """`<name>_accuracy.png`: per panel (fused, each modality) the validation accuracy over training of
    every method, mean over seeds; and `<name>_<method>_modulation.png`: the logged modulation curves
    (AIM's per-depth lambda, scores, masked fractions; OGM-GE's coefficients) of each method's first seed."""
    from matplotlib.figure import Figure

    from aim_hf.plotting import accuracy_curves, plot_modulation

    panels = {"fused": "fused (eval)", **{m: f"{m} probe (eval)" for m in modalities}}
    figure = Figure(figsize=(4.4 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (panel, key) in zip(axes, panels.items()):
        for i, (method, runs) in enumerate(results.items()):
            base = method.split(":")[0]
            if base in UNIMODAL:
                if base != panel:
                    continue
                key_ = "fused (eval)"  # the modality's accuracy alone
                style = {"color": "grey", "linestyle": ":"}
                label = f"{method} alone"
            else:
                key_, style, label = key, {"color": f"C{i}"}, method
            curves = [accuracy_curves(r["log_history"]).get(key_, []) for r in runs]
            if not all(curves):
                continue
            steps = [s for s, _ in curves[0]]
            mean = [statistics.fmean(c[j][1] for c in curves) for j in range(min(map(len, curves)))]
            ax.plot(steps[: len(mean)], mean, marker="o", markersize=3, label=label, **style)
        ax.set_title(f"{panel} (validation)" if panel == "fused" else f"{panel} probe (validation)")
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    written = [str(output_dir / f"{name}_accuracy.png")]
    figure.savefig(written[0], dpi=100)
    for method, runs in results.items():
        safe = method.replace(":", "_").replace(",", "_").replace("=", "")
        path = plot_modulation(runs[0]["log_history"], output_dir / f"{name}_{safe}_modulation.png")
        if path is not None:
            written.append(path)
    return written


# ------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    train_options = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python benchmarks/av_digits.py",
        description="Train each modality alone, none, ogm_ge and aim on AV-digits over seeds and report "
        "accuracy, time and memory. Options after `--` go to every `aim-hf train` run.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS),
        help="Modalities (trained alone) and modulation methods, each NAME[:option=value,...]; "
        "'none' is the reference of the ratios.",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads per run (OMP_NUM_THREADS). The small encoders gain little from more, and on a "
        "shared machine waiting threads make step times erratic.",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="Accuracy runs at a time (their results do not depend on it; time is measured separately).",
    )  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="av_digits", help="Stem of the written files.")
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep the runs' folders here (default: a temporary folder).")
    return parser.parse_args(argv), train_options


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_run":
        run_child(argv[1], argv[2:])
        return 0
    if argv and argv[0] == "_time":
        time_child(argv[1], argv[2])
        return 0
    args, train_options = parse_args(argv)
    from aim_hf.data.av_digits import MODALITIES

    command = shlex.join(["python", "benchmarks/av_digits.py", *argv])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or Path(tmp)
        results = run_all(args.methods, args.seeds, train_options, work_dir, args.threads, args.jobs)
        step_seconds = time_all(args.methods, args.seeds[0], train_options, work_dir, args.threads)
    summary = summarize(results, step_seconds, MODALITIES)
    checks = check_targets(summary, MODALITIES)
    plots = plot_results(results, MODALITIES, args.output_dir, args.name)
    (args.output_dir / f"{args.name}.json").write_text(
        json.dumps(
            {"command": command, "train_options": train_options, "summary": summary, "runs": results,
             "step_seconds": step_seconds},
            indent=1,
        )  # fmt: skip
    )
    report = args.output_dir / f"{args.name}.md"
    write_report(report, command, summary, checks, MODALITIES, train_options, load, args.threads, plots)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
