"""The balanced-learning benchmark on settings built from the embedded AV-digits sources.

    python benchmarks/av_digits.py --jobs 2                                   # every setting (committed results)
    python benchmarks/av_digits.py --settings strong --optimizers adamw sgd --jobs 2
    python benchmarks/av_digits.py --quick --settings strong --methods none aim   # minutes: what the tests run

A setting (`aim_hf.data.settings`, `docs/settings.md`) fixes how images and recordings are paired,
degraded and split; each (setting, optimizer) has its own training budget and learning rate, chosen
once on `none`'s validation accuracy (`PLANS` below). For every (setting, optimizer) it trains each
modality alone (the other input blanked), then every method, on the same seeds, each run one
`aim-hf train` in its own child process, `--jobs` at a time, and writes into `--output-dir`:

- `<setting>_<optimizer>.json`: `setting`, `optimizer`, `unimodal.<modality>` (per-seed test accuracy
  alone), `methods.<name>.seeds` / `.fused` / `.probe.<modality>` (per seed, same order: the test fused
  accuracy and each probe's test accuracy of the last checkpoint) and `.fused_best_val` (the test fused
  accuracy at the evaluation best on validation), their validation values, and every run's metrics
  and log history;
- `<setting>_<optimizer>.md`: the suppression gap of each modality (probe under `none` minus the
  modality alone, paired by seed), the setting's checks, and per method mean ± std with paired
  differences against `none` and against the best other method (by validation), each with its 95%
  t-interval over seeds; `<setting>_<optimizer>_accuracy.png`: validation curves;
- `benchmark.md`: all tables in one page, and the time / memory table of one timing run.

Time per optimizer step: after the accuracy runs, one child process trains every method of the
first (setting, optimizer) for `--timing-steps` steps, all in one process taking turns of a few
optimizer steps, so that every method meets the same machine (on a shared machine, speed drifts by
half over tens of seconds). A step is timed from `on_step_begin` to `on_step_end`. Peak memory: the
memory a run adds while it trains (CPU: the child's peak resident set `VmHWM`, reset when training
begins, minus its resident set then; GPU: `torch.cuda.max_memory_allocated` minus the allocated
memory then), mean over seeds. Both are ratios to `none` from the same invocation.

With `--work-dir`, each finished run's result stays there and a rerun of the same command reuses
it (delete the folder after changing the code).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shlex
import shutil
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

MODALITIES = ("vision", "audio")
UNIMODAL = MODALITIES
LABEL_NAMES = tuple(range(10))  # the ten digits of every setting
# `@optimizer`: only in the groups of that optimizer, the one the method's paper trains with.
DEFAULT_METHODS = ("vision", "audio", "none", "ogm_ge", "unimodal_losses", "aim", "opm@sgd", "pmr@sgd", "agm@sgd",
                   "mmpareto@sgd", "mla@sgd", "inforeg@sgd", "redreg@sgd")  # fmt: skip
# Passed to every run before the plan's and the user's own options (which override them).
BASE_TRAIN_OPTIONS = ["--disable_tqdm", "true", "--save_strategy", "no", "--report_to", "none"]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Timed methods take turns of this many optimizer steps: short enough that all meet the same machine
# (its speed drifts over tens of seconds), long enough that most steps run with their own model, not the
# previous turn's, in the caches (the median over steps then reflects the latter).
STEPS_PER_TURN = 5

OPTIMIZERS = {
    "adamw": [],  # the Trainer's default, AdamW
    "sgd": ["--optim", "sgd", "--optim_args", "momentum=0.9"],  # the OGM-GE reference's
}
# Per (setting, optimizer): seeds, and the options fixing the budget and learning rate, chosen once on
# `none`'s validation accuracy so that it has plateaued (docs/settings.md, "Budgets").
PLANS: dict[tuple[str, str], dict[str, Any]] = {
    ("strong", "adamw"): {"seeds": 8, "options": ["--num_train_epochs", "40", "--learning_rate", "3e-3", "--eval_steps", "96"]},
    ("strong", "sgd"): {"seeds": 5, "options": ["--num_train_epochs", "40", "--learning_rate", "0.2", "--eval_steps", "96"]},
    ("hopeless", "adamw"): {"seeds": 5, "options": ["--num_train_epochs", "30", "--learning_rate", "3e-3", "--eval_steps", "72"]},
    ("av_digits", "adamw"): {"seeds": 5, "options": ["--num_train_epochs", "30", "--learning_rate", "3e-3", "--eval_steps", "96"]},
}
# Options every planned run shares.
# Batch 64; every 4 epochs (3 on hopeless) an evaluation of the validation and the test split.
COMMON_OPTIONS = ["--per_device_train_batch_size", "64", "--eval_strategy", "steps"]
# --quick: a tiny budget, for the tests (numbers mean nothing).
QUICK_OPTIONS = ["--max_train_samples", "32", "--max_eval_samples", "16", "--max_steps", "4",
                 "--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2",
                 "--logging_steps", "2", "--hidden_size", "16", "--num_hidden_layers", "2"]  # fmt: skip
# 0.975 quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96 is within 4%).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


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
    """Train once with `aim-hf train <train_argv>` and write the measurements to `result_path`. Every
    evaluation during training also scores the test split, so that the test accuracy of the
    checkpoint best on validation can be read from the log (`best_on_validation`)."""
    from aim_hf import cli

    measure = _measure_callback()
    trainer, validation, test = cli.build_trainer(*cli.parse_train_args(train_argv), callbacks=[measure])
    trainer.eval_dataset = {"validation": validation, "test": test}
    metrics = cli.run(trainer, validation, test)
    result = {"metrics": metrics, "memory": measure.memory, "log_history": _rename_eval_keys(measure.log_history)}
    Path(result_path).write_text(json.dumps(result))


def _rename_eval_keys(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`eval_validation_*` -> `eval_*` (what the plots read) and `eval_test_*` -> `test_curve_*`."""
    renamed = []
    for entry in log_history:
        renamed.append(
            {k.replace("eval_validation_", "eval_", 1).replace("eval_test_", "test_curve_", 1): v for k, v in entry.items()}
        )
    return renamed


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
    one thread each, taking optimizer steps in turn; write each run's step times (and the seconds its
    method spent refreshing learned prototypes, AIM's amortised extra work) to `result_path`."""
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
    Path(result_path).write_text(json.dumps([
        {"step_seconds": timer.step_seconds, "refresh_seconds": getattr(trainer.modulation, "refresh_seconds", 0.0)}
        for timer, trainer in zip(timers, trainers)
    ]))  # fmt: skip


# ----------------------------------------------------------------------------------- methods
def split_optimizer(spec: str) -> tuple[str, str | None]:
    """`NAME[:options][@optimizer]` -> (the method spec, the one optimizer it runs under or None: all)."""
    method, sep, optimizer = spec.rpartition("@")
    if not sep:
        return spec, None
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Method {spec!r}: unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
    return method, optimizer


def methods_of(specs: Sequence[str], optimizer: str) -> list[str]:
    """The method specs (without `@optimizer`) that run in a group of `optimizer`."""
    kept = [split_optimizer(spec) for spec in specs]
    return [method for method, only in kept if only in (None, optimizer)]


def method_options(spec: str) -> list[str]:
    """`aim-hf train` options of a method spec `NAME[:key=value,...]`: NAME is a modality (trained
    alone, the other input blanked) or a modulation method. A key that is an `aim-hf train` option
    (e.g. `aim_r_max`) is passed as `--key value`; any other key is one of the method's own options and
    goes into `--modulation_kwargs` (values read as JSON where they parse, else as strings), e.g.
    `ogm_ge:alpha=0.3,mode=gradient` or `aim:aim_r_max=0.25`."""
    name, _, extra = spec.partition(":")
    options = ["--modulation", "none", "--only_modality", name] if name in UNIMODAL else ["--modulation", name]
    own: dict[str, Any] = {}
    for item in filter(None, extra.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Method {spec!r}: expected key=value, got {item!r}.")
        if key in _train_option_names():
            options += [f"--{key}", value]
        else:
            try:
                own[key] = json.loads(value)
            except json.JSONDecodeError:
                own[key] = value
    if own:
        options += ["--modulation_kwargs", json.dumps(own)]
    return options


@functools.cache
def _train_option_names() -> frozenset[str]:
    from aim_hf.cli import build_parser

    return frozenset(action.dest for action in build_parser()._actions)


def plan_options(setting: str, optimizer: str, quick: bool) -> list[str]:
    """The `aim-hf train` options of a (setting, optimizer): the setting, the optimizer, and the
    planned budget (or, with `quick`, the tiny one)."""
    if (setting, optimizer) not in PLANS:
        planned = ", ".join(f"{s}/{o}" for s, o in PLANS)
        raise ValueError(f"No plan for setting {setting!r} with optimizer {optimizer!r}; planned: {planned}.")
    budget = QUICK_OPTIONS if quick else [*COMMON_OPTIONS, *PLANS[setting, optimizer]["options"]]
    return ["--setting", setting, *OPTIMIZERS[optimizer], *budget]


def accuracy_hidden_size(options: Sequence[str]) -> int:
    """The encoder width `aim-hf train` uses with `options` (the last `--hidden_size`, else its default)."""
    from aim_hf.cli import ModelArguments

    sizes = [options[i + 1] for i, o in enumerate(options[:-1]) if o == "--hidden_size"]
    return int(sizes[-1]) if sizes else ModelArguments.hidden_size


def _safe(name: str) -> str:
    return name.replace(":", "_").replace(",", "_").replace("=", "")


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


def one_run(run_dir: Path, method: str, seed: int, options: Sequence[str], threads: int) -> dict[str, Any]:
    """Train `method` with `seed` and `options` in a child process (or reuse the result a finished
    earlier invocation left in `run_dir`); returns its result."""
    result_path = run_dir / "result.json"
    argv = [*BASE_TRAIN_OPTIONS, "--output_dir", str(run_dir / "model"), "--seed", str(seed),
            *method_options(method), *options]  # fmt: skip
    if result_path.is_file() and json.loads(result_path.read_text()).get("argv") == argv:
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    _run_script("_run", [str(result_path), *argv], run_dir / "log.txt", threads)
    result = json.loads(result_path.read_text())
    result.update(seed=seed, method=method, argv=argv, wall_seconds=time.time() - started)
    shutil.rmtree(run_dir / "model", ignore_errors=True)  # the weights are not needed, the numbers are kept
    result_path.write_text(json.dumps(result))
    # One print per run: the jobs' threads would interleave two.
    print(f"[{time.strftime('%H:%M:%S')}] {run_dir.parent.parent.name} {method} seed {seed} done in "
          f"{result['wall_seconds']:.0f} s: test accuracy {result['metrics']['test_accuracy']:.4f}", flush=True)  # fmt: skip
    return result


def time_all(
    methods: Sequence[str], seed: int, train_options: Sequence[str], work_dir: Path, threads: int, hidden_size: int
) -> dict[str, dict[str, Any]]:
    """Each method's step times from one child process that trains them all in turn (`time_child`),
    with `seed`, encoders `hidden_size` wide and no evaluation; returns by method its `step_seconds`
    and `refresh_seconds`."""
    timing_dir = work_dir / f"timing_h{hidden_size}"
    runs = [
        [*BASE_TRAIN_OPTIONS, "--output_dir", str(timing_dir / _safe(m)), "--seed", str(seed),
         *method_options(m), *train_options, "--hidden_size", str(hidden_size), "--eval_strategy", "no",
         "--load_best_model_at_end", "false"]
        for m in methods
    ]  # fmt: skip
    timing_dir.mkdir(parents=True, exist_ok=True)
    (timing_dir / "runs.json").write_text(json.dumps(runs))
    print(f"[{time.strftime('%H:%M:%S')}] timing {', '.join(methods)} in turn, seed {seed}, hidden {hidden_size}", flush=True)
    _run_script("_time", [str(timing_dir / "result.json"), str(timing_dir / "runs.json")], timing_dir / "log.txt", threads)
    return dict(zip(methods, json.loads((timing_dir / "result.json").read_text())))


# ------------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Mean of the paired differences `a - b` and its 95% t-interval over the pairs: (mean, low, high)."""
    if len(a) != len(b):
        raise ValueError(f"Paired values need equal lengths, got {len(a)} and {len(b)}.")
    diffs = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    t = T_975[len(diffs) - 2] if len(diffs) - 1 <= len(T_975) else 1.96
    half = t * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def best_on_validation(log_history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The test metrics (`test_curve_*`) logged at the evaluation with the highest validation fused
    accuracy (the first such), keyed like the final test metrics (`test_*`). The Trainer logs the
    validation and the test evaluation of one step as two entries: they are joined by step."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "step" in entry and any(k.startswith(("eval_", "test_curve_")) for k in entry):
            by_step.setdefault(entry["step"], {}).update(entry)
    evaluations = [e for _, e in sorted(by_step.items()) if "eval_accuracy" in e and "test_curve_accuracy" in e]
    if not evaluations:
        return {}
    best = max(evaluations, key=lambda e: e["eval_accuracy"])  # max keeps the first of equals
    return {k.replace("test_curve_", "test_", 1): v for k, v in best.items() if k.startswith("test_curve_")}


def collect(
    setting: str, optimizer: str, results: dict[str, list[dict[str, Any]]], command: str, options: Sequence[str]
) -> dict[str, Any]:
    """The per-seed record of one (setting, optimizer): unimodal accuracies, each method's fused and
    probe accuracies (test, last checkpoint), the best-on-validation test accuracy and the validation
    values, all in seed order; plus every run."""
    record: dict[str, Any] = {"setting": setting, "optimizer": optimizer, "command": command,
                              "train_options": list(options), "unimodal": {}, "methods": {}}  # fmt: skip
    for method, runs in results.items():
        metrics = [r["metrics"] for r in runs]
        if method in UNIMODAL:
            record["unimodal"][method] = [m["test_accuracy"] for m in metrics]
            record["unimodal_val"] = {**record.get("unimodal_val", {}), method: [m["eval_accuracy"] for m in metrics]}
            continue
        best = [best_on_validation(r["log_history"]) for r in runs]
        record["methods"][method] = {
            "seeds": [r["seed"] for r in runs],
            "fused": [m["test_accuracy"] for m in metrics],
            "probe": {mod: [m[f"test_{mod}_probe_accuracy"] for m in metrics] for mod in MODALITIES},
            "fused_best_val": [b.get("test_accuracy", math.nan) for b in best],
            "val_fused": [m["eval_accuracy"] for m in metrics],
            "val_probe": {mod: [m[f"eval_{mod}_probe_accuracy"] for m in metrics] for mod in MODALITIES},
        }
    record["runs"] = results
    return record


def validation_view(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with the validation accuracies in the place of the test ones, for a study that chooses
    on validation (`--report-split validation`)."""
    methods = {
        name: {**row, "fused": row["val_fused"], "probe": row["val_probe"], "fused_best_val": []}
        for name, row in record["methods"].items()
    }
    return {**record, "split": "validation", "unimodal": record.get("unimodal_val", {}), "methods": methods}


def aim_modulation(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per AIM run family (`aim`, `aim:...`): DAM's per-depth strengths (`lambda`, `mu`) and the masked
    fractions, each the mean over the logged steps with the modulation active, then over seeds."""
    out = {}
    for name, runs in record["runs"].items():
        if name.split(":")[0] != "aim":
            continue
        per_seed: dict[str, list[float]] = {}
        for run in runs:
            active = [e for e in run["log_history"] if e.get("aim/active") == 1.0]
            keys = {k for e in active for k in e if k.startswith(("aim/lambda/", "aim/mu/", "aim/masked_fraction/"))}
            for key in keys:
                per_seed.setdefault(key.removeprefix("aim/"), []).append(statistics.fmean(e[key] for e in active if key in e))
        out[name] = {k: statistics.fmean(v) for k, v in sorted(per_seed.items())}
    return out


def suppression(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per modality: its accuracy alone, its probe under `none`, and the paired gap (probe - alone)."""
    if "none" not in record["methods"]:
        return {}
    none = record["methods"]["none"]
    return {
        m: {"alone": mean_std(alone), "probe": mean_std(none["probe"][m]),
            "gap": paired_interval(none["probe"][m], alone)}  # fmt: skip
        for m, alone in record["unimodal"].items()
    }


def setting_checks(record: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Whether the setting shows what it is built for (docs/settings.md). `hopeless`: the weak
    modality (the lower accuracy alone) is within 5 points of chance alone. The others: the weak
    modality (the larger gap) at least 15 points below its accuracy alone under `none`, the dominant
    one within 3 points of its own, and the fused accuracy above the dominant modality alone."""
    gaps = suppression(record)
    if len(gaps) < 2:
        return []
    if record["setting"] == "hopeless":
        weak = min(gaps, key=lambda m: gaps[m]["alone"][0])
        alone, chance = gaps[weak]["alone"][0], 1 / len(LABEL_NAMES)
        return [(f"weak modality ({weak}) alone within 5 points of chance ({chance:.2f})", alone - chance <= 0.05,
                 f"{alone:.4f}")]  # fmt: skip
    weak = min(gaps, key=lambda m: gaps[m]["gap"][0])
    checks = []
    g = gaps[weak]["gap"][0]
    checks.append((f"weak modality ({weak}) probe under none >= 15 points below it alone", g <= -0.15, f"{g * 100:+.1f} points"))
    for m in (m for m in gaps if m != weak):
        g = gaps[m]["gap"][0]
        checks.append((f"dominant modality ({m}) probe under none within 3 points of it alone", abs(g) <= 0.03, f"{g * 100:+.1f} points"))
        fused, alone = statistics.fmean(record["methods"]["none"]["fused"]), gaps[m]["alone"][0]
        checks.append((f"fused accuracy under none above {m} alone", fused > alone, f"{fused:.4f} vs {alone:.4f}"))
    return checks


def comparisons(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method: paired differences (mean, 95% interval) of the fused and probe test accuracies
    against `none`, and of the fused accuracy against the best other method (by mean validation fused
    accuracy, `none` excluded)."""
    methods = record["methods"]
    out: dict[str, dict[str, Any]] = {}
    for name, row in methods.items():
        entry: dict[str, Any] = {}
        if name != "none" and "none" in methods:
            none = methods["none"]
            entry["fused_vs_none"] = paired_interval(row["fused"], none["fused"])
            entry["probe_vs_none"] = {m: paired_interval(row["probe"][m], none["probe"][m]) for m in MODALITIES}
        others = [o for o in methods if o not in (name, "none")]
        if others:
            best = max(others, key=lambda o: statistics.fmean(methods[o]["val_fused"]))
            entry["best_other"] = best
            entry["fused_vs_best_other"] = paired_interval(row["fused"], methods[best]["fused"])
        out[name] = entry
    return out


def time_memory(
    results: dict[str, list[dict[str, Any]]] | None, timed: dict[str, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Per timed method: the median and the mean step time (the mean carries work done every few
    steps, such as AIM's prototype refresh), the share of the time spent refreshing prototypes, the
    mean memory the accuracy runs added while training (`results`; None: not measured at this size),
    and the ratios to `none`."""
    rows = {}
    for method, timing in timed.items():
        seconds = timing["step_seconds"]
        rows[method] = {
            "step_seconds": statistics.median(seconds),
            "mean_step_seconds": statistics.fmean(seconds),
            "refresh_share": timing["refresh_seconds"] / sum(seconds),
            "memory_bytes": math.nan if results is None else statistics.fmean(
                r["memory"]["peak_bytes"] - r["memory"]["baseline_bytes"] for r in results[method]),
            "steps": len(seconds),
        }  # fmt: skip
    if "none" in rows:
        none = rows["none"]
        for row in rows.values():
            row["time_ratio"] = row["step_seconds"] / none["step_seconds"]
            row["mean_time_ratio"] = row["mean_step_seconds"] / none["mean_step_seconds"]
            row["memory_ratio"] = row["memory_bytes"] / none["memory_bytes"] if none["memory_bytes"] > 0 else math.nan
    return rows


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


def _ms(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


def _diff(value: tuple[float, float, float] | None) -> str:
    """A paired difference in points with its interval, bold where the interval lies above 0."""
    if value is None:
        return "—"
    mean, low, high = (x * 100 for x in value)
    text = f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"
    return f"**{text}**" if low > 0 else text


def setting_section(record: dict[str, Any], plots: Sequence[str]) -> list[str]:
    """The markdown of one (setting, optimizer): suppression gaps, checks, and the method table."""
    setting, optimizer, methods = record["setting"], record["optimizer"], record["methods"]
    seeds = next(iter(methods.values()))["seeds"] if methods else []
    lines = [
        f"## `{setting}` with {optimizer}",
        "",
        f"- every run: `aim-hf train {shlex.join(record['train_options'])}` plus the method's options and the seed",
        f"- seeds: {', '.join(map(str, seeds))} (the same for every method); per-seed values in "
        f"`{setting}_{optimizer}.json`",
        "",
    ]
    gaps = suppression(record)
    if gaps:
        lines += [f"Suppression gap: each modality's probe under `none` minus its accuracy alone ({record.get('split', 'test')}, paired by seed, "
                  "points, 95% t-interval).", "", "| modality | alone | probe under `none` | gap |", "|---|---|---|---|"]  # fmt: skip
        for m, g in gaps.items():
            lines.append(f"| {m} | {g['alone'][0]:.4f} ± {g['alone'][1]:.4f} | {g['probe'][0]:.4f} ± {g['probe'][1]:.4f} | {_diff(g['gap'])} |")
        lines += ["", "| check | met | numbers |", "|---|---|---|"]
        lines += [f"| {c} | {'yes' if met else 'NO'} | {n} |" for c, met, n in setting_checks(record)]
        lines.append("")
    compared = comparisons(record)
    header = ["method", "fused acc", "fused acc (best val)"] + [f"{m} probe" for m in MODALITIES]
    header += ["Δ fused vs `none`"] + [f"Δ {m} probe vs `none`" for m in MODALITIES] + ["best other (val)", "Δ fused vs it"]
    split = record.get("split", "test")
    lines += [
        f"{split.capitalize()} accuracy of the last checkpoint (and, second column, the test accuracy at the evaluation "
        "best on validation), mean ± std over seeds; Δ: paired difference in points with its 95% t-interval, bold "
        "where it lies above 0.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for m, alone in record["unimodal"].items():
        lines.append(f"| `{m}` alone | {_ms(alone)} |" + " — |" * (len(header) - 2))
    for name, row in methods.items():
        c = compared[name]
        best_val = [x for x in row["fused_best_val"] if not math.isnan(x)]
        cells = [f"`{name}`", _ms(row["fused"]), _ms(best_val) if best_val else "—"]
        cells += [_ms(row["probe"][m]) for m in MODALITIES]
        cells += [_diff(c.get("fused_vs_none"))] + [_diff(c.get("probe_vs_none", {}).get(m)) for m in MODALITIES]
        cells += [f"`{c['best_other']}`" if "best_other" in c else "—", _diff(c.get("fused_vs_best_other"))]
        lines.append("| " + " | ".join(cells) + " |")
    modulation = aim_modulation(record)
    if modulation:
        columns = sorted({k for row in modulation.values() for k in row})
        lines += ["", "AIM's modulation: DAM's strength per modality and depth (`lambda`, and `mu` under symmetric PAM) and "
                  "the share of each encoder's units switched off in the auxiliary pass, mean over the active logged "
                  "steps, then over seeds.", "", "| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]  # fmt: skip
        for name, row in modulation.items():
            lines.append(f"| `{name}` | " + " | ".join(f"{row[k]:.3f}" if k in row else "—" for k in columns) + " |")
    lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return lines


def time_section(
    by_size: dict[int, dict[str, dict[str, float]]], setting: str, optimizer: str, seed: int, accuracy_size: int
) -> list[str]:
    if not by_size:
        return []
    steps = next(iter(next(iter(by_size.values())).values()))["steps"]
    lines = [
        "## Time and memory",
        "",
        f"Time per optimizer step (forward, backward, modulation, optimizer) over {steps} steps of one more run per "
        f"method and encoder width (`{setting}` with {optimizer}, seed {seed}, no evaluation), all methods of a width "
        f"in one process taking turns of {STEPS_PER_TURN} steps so that they meet the same machine: the median, and "
        "the mean, which carries work done every few steps (AIM's prototype refresh, whose share of the time is "
        "given). Peak memory added while training, mean over the accuracy runs' seeds (at their width only). "
        "Ratios to `none` in this invocation.",
        "",
        "| width | method | ms / step (median) | × none | ms / step (mean) | × none | refresh share | peak mem (MiB) | mem × none |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for size, rows in by_size.items():
        for method, row in rows.items():
            memory = "—" if math.isnan(row["memory_bytes"]) else f"{row['memory_bytes'] / 2**20:.1f}"
            memory_ratio = "—" if math.isnan(row.get("memory_ratio", math.nan)) else f"{row['memory_ratio']:.2f}"
            lines.append(
                f"| {size}{' (accuracy runs)' if size == accuracy_size else ''} | `{method}` | "
                f"{row['step_seconds'] * 1000:.1f} | {row.get('time_ratio', math.nan):.2f} | "
                f"{row['mean_step_seconds'] * 1000:.1f} | {row.get('mean_time_ratio', math.nan):.2f} | "
                f"{row['refresh_share']:.1%} | {memory} | {memory_ratio} |"
            )
    return lines + [""]


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
        description="Train each modality alone and every method over seeds on the benchmark settings and report "
        "accuracy with paired 95% intervals, time and memory. Options after `--` go to every `aim-hf train` run.",
        allow_abbrev=False,
    )
    parser.add_argument("--settings", nargs="+", default=["strong", "hopeless"],
                        help="Settings (aim_hf.data.settings): strong, hopeless, av_digits (planned, not run by default).")  # fmt: skip
    parser.add_argument("--optimizers", nargs="+", default=None, choices=list(OPTIMIZERS),
                        help="Optimizers to run each setting with (default: each setting's planned ones).")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="Seeds (default: the plan's, 8 on strong with AdamW and 5 elsewhere; --quick: 0 1).")  # fmt: skip
    parser.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS),
        help="Modalities (trained alone) and modulation methods, each NAME[:option=value,...][@optimizer] "
        "(@sgd: only in the SGD groups, the optimizer of the method's paper); 'none' is the reference of the "
        "paired differences and ratios.",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="A tiny budget (seconds per run): checks the harness, measures nothing.")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads per run (OMP_NUM_THREADS). The small encoders gain little from more, and on a "
        "shared machine waiting threads make step times erratic.",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="Runs at a time (the accuracies do not depend on it).")
    parser.add_argument("--timing-steps", type=int, default=150, help="Optimizer steps of the timing run; 0: no timing.")
    parser.add_argument("--timing-hidden-sizes", type=int, nargs="+", default=None,
                        help="Encoder widths of the timing runs (default: the accuracy runs' and 128).")  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--report-split", choices=["test", "validation"], default="test",
                        help="The split the markdown tables report (a study that chooses settings: validation; the JSON "
                        "keeps both).")  # fmt: skip
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="Keep the runs' folders here and reuse the finished ones (default: a temporary folder).")  # fmt: skip
    return parser.parse_args(argv), train_options


def groups_of(args: argparse.Namespace) -> list[tuple[str, str, list[int]]]:
    """The (setting, optimizer, seeds) to run: every setting under the first optimizer (AdamW, the
    Trainer's default), then under the next, and so on."""
    groups = []
    for setting in args.settings:
        optimizers = args.optimizers or [o for s, o in PLANS if s == setting]
        for optimizer in optimizers:
            plan = PLANS.get((setting, optimizer))
            if plan is None:
                plan_options(setting, optimizer, args.quick)  # raises the error that names the plans
            seeds = args.seeds or ([0, 1] if args.quick else list(range(plan["seeds"])))
            groups.append((setting, optimizer, seeds))
    return sorted(groups, key=lambda g: list(OPTIMIZERS).index(g[1]))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_run":
        run_child(argv[1], argv[2:])
        return 0
    if argv and argv[0] == "_time":
        time_child(argv[1], argv[2])
        return 0
    args, extra = parse_args(argv)
    groups = groups_of(args)
    command = shlex.join(["python", "benchmarks/av_digits.py", *argv])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    args.output_dir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=args.jobs) as pool:
        work_dir = args.work_dir or Path(tmp)
        # Every run is queued at once, group by group: the pool keeps `jobs` busy, and each group's report
        # is written as soon as its runs are done.
        futures = {}
        for setting, optimizer, seeds in groups:
            options = [*plan_options(setting, optimizer, args.quick), *extra]
            methods = methods_of(args.methods, optimizer)
            # Seed by seed, so that an interrupted run leaves whole seeds for a rerun with --work-dir to reuse.
            submitted = {(m, s): pool.submit(one_run, work_dir / f"{setting}_{optimizer}" / _safe(m) / f"seed{s}",
                                             m, s, options, args.threads)
                         for s in seeds for m in methods}
            futures[setting, optimizer] = options, {m: [submitted[m, s] for s in seeds] for m in methods}  # fmt: skip
        records = {}
        for (setting, optimizer), (options, by_method) in futures.items():
            results = {m: [f.result() for f in runs] for m, runs in by_method.items()}
            record = collect(setting, optimizer, results, command, options)
            name = f"{setting}_{optimizer}"
            plots = plot_results(results, MODALITIES, args.output_dir, name)
            (args.output_dir / f"{name}.json").write_text(json.dumps(record))
            section = setting_section(record if args.report_split == "test" else validation_view(record), plots)
            (args.output_dir / f"{name}.md").write_text("\n".join([f"# Benchmark: {name}", "", *section]))
            sections += section
            records[setting, optimizer] = record
            print("\n".join(section), flush=True)
        setting, optimizer, seeds = groups[0]
        timed = [m for m in methods_of(args.methods, optimizer) if m not in UNIMODAL]
        options = [*plan_options(setting, optimizer, args.quick), *extra]
        accuracy_size = accuracy_hidden_size(options)
        by_size, timings = {}, {}
        if args.timing_steps > 0 and timed:
            for size in args.timing_hidden_sizes or sorted({accuracy_size, 128}):
                timings[size] = time_all(timed, seeds[0], [*options, "--max_steps", str(args.timing_steps)],
                                         work_dir, args.threads, size)  # fmt: skip
                runs = records[setting, optimizer]["runs"] if size == accuracy_size else None
                by_size[size] = time_memory(runs, timings[size])
            (args.output_dir / "timing.json").write_text(json.dumps({"command": command, "rows": by_size, "timings": timings}))
    header = [
        "# Balanced-learning benchmark",
        "",
        "Written by `benchmarks/av_digits.py`; do not edit by hand. The settings are described in `docs/settings.md`.",
        "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        *machine_description(load, args.threads),
        "",
    ]
    report = args.output_dir / "benchmark.md"
    report.write_text("\n".join([*header, *sections, *time_section(by_size, setting, optimizer, seeds[0], accuracy_size)]))
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
