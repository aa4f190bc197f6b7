"""The balanced-learning benchmark: the settings built from the embedded AV-digits sources, and the
settings for pretrained encoders (`emoji`, `spoken`).

    python benchmarks/av_digits.py --jobs 2                                   # every AV-digits setting (committed results)
    python benchmarks/av_digits.py --settings strong --optimizers adamw sgd --jobs 2
    python benchmarks/av_digits.py --quick --settings strong --methods none aim   # minutes: what the tests run
    python benchmarks/av_digits.py --settings emoji spoken --enc-root enc --jobs 2  # the pretrained encoders

A setting (`aim_hf.data.settings`, `docs/settings.md`) fixes how the inputs are paired, degraded and
split; each (setting, optimizer) has its own training budget and learning rate (on the pretrained
settings: its fine-tuning policy), chosen once on `none`'s validation accuracy (`PLANS` below). The
pretrained settings read the encoders `python -m aim_hf.offline NAME ENC_ROOT/NAME` converts
(`ENCODERS`), and each seed there is also the data seed (`--dataset_seed`), as in their calibration.
For every (setting, optimizer) it trains each modality alone (the other input blanked), then every
method, on the same seeds, each run one `aim-hf train` in its own child process, `--jobs` at a time
(the runs, record, statistics and tables of `aim-hf compare`: `aim_hf.compare`, `aim_hf.stats`), and
writes into `--output-dir`:

- `<setting>_<optimizer>.json`: `setting`, `optimizer`, `unimodal.<modality>` (per-seed test accuracy
  alone), `methods.<name>.seeds` / `.fused` / `.probe.<modality>` (per seed, same order: the test fused
  accuracy and each probe's test accuracy of the last checkpoint) and `.fused_best_val` (the test fused
  accuracy at the evaluation best on validation), their validation values, and every run's metrics
  and log history;
- `<setting>_<optimizer>.md`: the suppression gap of each modality (probe under `none` minus the
  modality alone, paired by seed), the setting's checks, and per method mean ± std with paired
  differences against `none` and against the best other method (by validation), each with its 95%
  t-interval over seeds; `<setting>_<optimizer>_accuracy.png`: validation curves;
- `benchmark.md` (`pretrained.md` for the pretrained settings, run apart): all tables in one page,
  and the time / memory table of the timing runs.

Time per optimizer step: after the accuracy runs, one child process trains every method of the
first (setting, optimizer) (on the pretrained settings: of each setting, on its encoders) for
`--timing-steps` steps, all in one process taking turns of a few optimizer steps, so that every
method meets the same machine (on a shared machine, speed drifts by half over tens of seconds). A
step is timed from `on_step_begin` to `on_step_end`. Peak memory: the memory a run adds while it
trains (CPU: the child's peak resident set `VmHWM`, reset when training begins, minus its resident
set then; GPU: `torch.cuda.max_memory_allocated` minus the allocated memory then), mean over seeds. Both are ratios to `none` from the same invocation.

With `--work-dir`, each finished run's result stays there and a rerun of the same command reuses
it (delete the folder after changing the code).
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
from pathlib import Path
from typing import Any

from aim_hf.compare.record import collect, suppression
from aim_hf.compare.report import methods_table, plot_accuracy, suppression_table
from aim_hf.compare.runs import BASE_TRAIN_OPTIONS, Run, RunFailed, plan_runs, run_all, safe_name
from aim_hf.compare.runs import method_options as _method_options
from aim_hf.data.settings import PRETRAINED_SETTINGS
from aim_hf.modulation.composite import members_of

MODALITIES = ("vision", "audio")  # of the AV-digits settings; the pretrained ones declare their own
ALL_MODALITIES = frozenset(MODALITIES).union(*(s.modalities for s in PRETRAINED_SETTINGS.values()))
LABEL_NAMES = tuple(range(10))  # the ten digits of every setting
# `@optimizer`: only in the groups of that optimizer, the one the method's paper trains with.
DEFAULT_METHODS = ("vision", "audio", "none", "ogm_ge", "unimodal_losses", "aim", "opm@sgd", "pmr@sgd", "agm@sgd",
                   "mmpareto@sgd", "mla@sgd", "inforeg@sgd", "redreg@sgd")  # fmt: skip
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
    # The pretrained settings' fine-tuning policies: which layers train, per-encoder learning rates,
    # epochs, BatchNorm (docs/settings.md, "Calibration"). Image size and clip length are the encoders'
    # (`--image_size 64`, `--clip_seconds 1` when converted).
    ("emoji", "adamw"): {"seeds": 5, "options": [
        "--num_train_epochs", "4", "--learning_rate", "1e-3",
        "--learning_rate_mapping", '{"vision": 5e-4, "text": 5e-5}', "--batch_norm", "0.1"]},
    ("spoken", "adamw"): {"seeds": 5, "options": [
        "--num_train_epochs", "2", "--learning_rate", "1e-3",
        "--learning_rate_mapping", '{"vision": 5e-4, "audio": 1e-4}',
        "--freeze", '{"vision": 8, "audio": 2}', "--batch_norm", "0.1",
        "--setting_kwargs", '{"snr_db": [-20.0, -10.0]}']},
}  # fmt: skip
# Options every planned run of an AV-digits setting shares.
# Batch 64; every 4 epochs (3 on hopeless) an evaluation of the validation and the test split.
COMMON_OPTIONS = ["--per_device_train_batch_size", "64", "--eval_strategy", "steps"]
# ... of a pretrained setting: batch 32 (the default), an evaluation every epoch (the default).
PRETRAINED_OPTIONS = ["--per_device_eval_batch_size", "64", "--logging_steps", "10"]
# The offline encoders of each pretrained setting: modality -> the name `python -m aim_hf.offline`
# converts, in the folder of that name under --enc-root.
ENCODERS = {
    "emoji": {"vision": "mobilenet_v2", "text": "minilm"},
    "spoken": {"vision": "mobilenet_v2", "audio": "whisper_tiny_en"},
}
# Run by default on the pretrained settings besides every registered method.
COMPOSITIONS = ("aim+unimodal_losses", "ogm_ge+unimodal_losses")
# --quick: a tiny budget, for the tests (numbers mean nothing); on the AV-digits settings, tiny encoders,
# on the pretrained ones (whose encoders are --enc-root's), tiny data.
QUICK_OPTIONS = ["--max_train_samples", "32", "--max_eval_samples", "16", "--max_steps", "4",
                 "--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2",
                 "--logging_steps", "2"]  # fmt: skip
QUICK_ENCODERS = ["--hidden_size", "16", "--num_hidden_layers", "2"]
QUICK_DATA = {
    "emoji": ["--setting_kwargs", json.dumps({"image_size": 16})],
    "spoken": ["--setting_kwargs", json.dumps({"accents": ["en-us"], "variants": ["m3", "f2"], "speeds": [175],
               "pitches": [40, 60], "split_sizes": {"train": 3, "validation": 1, "test": 1}})],
}  # fmt: skip
# The summary page and timing file of an invocation: of the AV-digits settings, of the pretrained ones.
SUMMARIES = {False: ("benchmark.md", "timing.json"), True: ("pretrained.md", "pretrained_timing.json")}


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
    from aim_hf.scripts.train import build_trainer, parse_train_args

    runs = json.loads(Path(spec_path).read_text())
    rotation = Rotation(len(runs))
    timers, trainers = [], []
    for index, argv in enumerate(runs):
        model_args, data_args, training_args = parse_train_args(argv)
        if training_args.gradient_accumulation_steps != 1:
            # Accelerate's gradient-sync flag is shared by the process's trainers; with one micro-batch
            # per step it is always on, whichever trainer set it last.
            raise ValueError("Timing runs in turn needs --gradient_accumulation_steps 1.")
        timers.append(_turn_timer(rotation, index))
        trainers.append(build_trainer(model_args, data_args, training_args, callbacks=[timers[-1]])[0])
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
        {"step_seconds": timer.step_seconds, "refresh_seconds": sum(getattr(m, "refresh_seconds", 0.0) for m in members_of(trainer.modulation))}
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


def methods_of(specs: Sequence[str], optimizer: str, modalities: Sequence[str] = MODALITIES) -> list[str]:
    """The method specs (without `@optimizer`) that run in a group of `optimizer` on a setting of
    `modalities`: a modality only another setting has is left out."""
    kept = [split_optimizer(spec) for spec in specs]
    return [m for m, only in kept if only in (None, optimizer) and (m not in ALL_MODALITIES or m in modalities)]


def method_options(spec: str, modalities: Sequence[str] = MODALITIES) -> list[str]:
    """`aim-hf train` options of a method spec (`aim_hf.compare.runs.method_options`): a modality name
    trains that modality alone."""
    return _method_options(spec, modalities)


def is_pretrained(setting: str) -> bool:
    """Whether `setting` is one of the settings for pretrained encoders (`emoji`, `spoken`)."""
    return setting in PRETRAINED_SETTINGS


def modalities_of(setting: str) -> tuple[str, ...]:
    return PRETRAINED_SETTINGS[setting].modalities if is_pretrained(setting) else MODALITIES


def default_methods(setting: str) -> list[str]:
    """The methods run when `--methods` is not given: on the AV-digits settings `DEFAULT_METHODS`; on a
    pretrained setting each modality alone, every registered method and `COMPOSITIONS`."""
    if not is_pretrained(setting):
        return list(DEFAULT_METHODS)
    from aim_hf.modulation import MODULATIONS

    return [*modalities_of(setting), "none", *(m for m in MODULATIONS if m != "none"), *COMPOSITIONS]


def encoder_folders(setting: str, enc_root: Path | None) -> dict[str, str]:
    """The encoder folder of each modality of a pretrained setting under `enc_root`; a one-line error
    naming the conversion command where one is missing."""
    if enc_root is None:
        names = ", ".join(sorted(set(ENCODERS[setting].values())))
        raise ValueError(f"Setting {setting!r} fine-tunes pretrained encoders: give --enc-root, the folder holding "
                         f"{names} (python -m aim_hf.offline NAME ENC_ROOT/NAME).")  # fmt: skip
    folders = {m: str(enc_root / name) for m, name in ENCODERS[setting].items()}
    for modality, folder in folders.items():
        if not Path(folder, "config.json").is_file():
            name = ENCODERS[setting][modality]
            raise ValueError(f"No encoder in {folder} ({setting}'s {modality}); convert it with "
                             f"`python -m aim_hf.offline {name} {folder}` (docs/pretrained_encoders.md).")  # fmt: skip
    return folders


def plan_options(setting: str, optimizer: str, quick: bool, enc_root: Path | None = None) -> list[str]:
    """The `aim-hf train` options of a (setting, optimizer): the setting (and, on a pretrained one, its
    encoders under `enc_root`), the optimizer, and the planned budget; with `quick`, the tiny budget
    (on a pretrained setting, after the planned policy, on tiny data)."""
    if (setting, optimizer) not in PLANS:
        planned = ", ".join(f"{s}/{o}" for s, o in PLANS)
        raise ValueError(f"No plan for setting {setting!r} with optimizer {optimizer!r}; planned: {planned}.")
    plan = PLANS[setting, optimizer]["options"]
    if not is_pretrained(setting):
        budget = [*QUICK_OPTIONS, *QUICK_ENCODERS] if quick else [*COMMON_OPTIONS, *plan]
        return ["--setting", setting, *OPTIMIZERS[optimizer], *budget]
    encoders = json.dumps(encoder_folders(setting, enc_root))
    quick_options = [*QUICK_OPTIONS, *QUICK_DATA[setting]] if quick else []
    return ["--setting", setting, "--encoders", encoders, *OPTIMIZERS[optimizer], *PRETRAINED_OPTIONS, *plan,
            *quick_options]  # fmt: skip


def seed_options(setting: str, seed: int) -> list[str]:
    """The options that follow the training seed: on a pretrained setting the data seed (each seed its
    own split, pairing and noise, as calibrated); the AV-digits settings keep one split."""
    return ["--dataset_seed", str(seed)] if is_pretrained(setting) else []


def plan_group(
    setting: str, methods: Sequence[str], seeds: Sequence[int], options: Sequence[str], folder: Path
) -> list[Run]:
    """The runs of a (setting, optimizer), seed by seed: those of `aim-hf compare`
    (`aim_hf.compare.runs.plan_runs`), with [`seed_options`]."""
    modalities = modalities_of(setting)
    return [run for seed in seeds
            for run in plan_runs(methods, [seed], modalities, [*options, *seed_options(setting, seed)], folder)]  # fmt: skip


def accuracy_hidden_size(options: Sequence[str]) -> int:
    """The encoder width `aim-hf train` uses with `options` (the last `--hidden_size`, else its default)."""
    from aim_hf.scripts.arguments import ModelArguments

    sizes = [options[i + 1] for i, o in enumerate(options[:-1]) if o == "--hidden_size"]
    return int(sizes[-1]) if sizes else ModelArguments.hidden_size


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


def timing_configurations(
    setting: str, options: Sequence[str], widths: Sequence[int] | None
) -> list[tuple[str, list[str], bool]]:
    """The timing runs of a (setting, optimizer) with `options`: (label, the options that make it, whether
    the accuracy runs trained so). AV-digits: its encoders at each width of `widths` (default: the
    accuracy runs' and 128); a pretrained setting: its encoders as they are, labelled by the setting."""
    if is_pretrained(setting):
        return [(setting, [], True)]
    accuracy = accuracy_hidden_size(options)
    return [(str(size), ["--hidden_size", str(size)], size == accuracy) for size in widths or sorted({accuracy, 128})]


def time_all(
    methods: Sequence[str], seed: int, train_options: Sequence[str], work_dir: Path, threads: int, label: str,
    modalities: Sequence[str] = MODALITIES,
) -> dict[str, dict[str, Any]]:
    """Each method's step times from one child process that trains them all in turn (`time_child`),
    with `seed`, `train_options` (those of one of [`timing_configurations`], labelled `label`) and no
    evaluation; returns by method its `step_seconds` and `refresh_seconds`."""
    timing_dir = work_dir / f"timing_{label}"
    runs = [
        [*BASE_TRAIN_OPTIONS, "--output_dir", str(timing_dir / safe_name(m)), "--seed", str(seed),
         *method_options(m, modalities), *train_options, "--eval_strategy", "no", "--load_best_model_at_end", "false"]
        for m in methods
    ]  # fmt: skip
    timing_dir.mkdir(parents=True, exist_ok=True)
    (timing_dir / "runs.json").write_text(json.dumps(runs))
    print(f"[{time.strftime('%H:%M:%S')}] timing {', '.join(methods)} in turn, seed {seed}, {label}", flush=True)
    _run_script("_time", [str(timing_dir / "result.json"), str(timing_dir / "runs.json")], timing_dir / "log.txt", threads)
    return dict(zip(methods, json.loads((timing_dir / "result.json").read_text())))


# ------------------------------------------------------------------------------------ records
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


def setting_checks(record: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Whether the setting shows what it is built for (docs/settings.md). `hopeless`: the weak
    modality (the lower accuracy alone) is within 5 points of chance alone. The others: the weak
    modality (the larger gap) at least 15 points below its accuracy alone under `none`, the dominant
    one within 3 points of its own, and the fused accuracy above the dominant modality alone. The
    pretrained settings were built without a target gap (their gaps are reported as found): none."""
    gaps = suppression(record)
    if len(gaps) < 2 or is_pretrained(record["setting"]):
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


def setting_section(record: dict[str, Any], plots: Sequence[str]) -> list[str]:
    """The markdown of one (setting, optimizer): suppression gaps, checks, and the method table."""
    setting, optimizer, methods = record["setting"], record["optimizer"], record["methods"]
    seeds = next(iter(methods.values()))["seeds"] if methods else []
    seed = "`--seed` and `--dataset_seed` (the same)" if is_pretrained(setting) else "`--seed`"
    lines = [
        f"## `{setting}` with {optimizer}",
        "",
        f"- every run: `aim-hf train {shlex.join(record['train_options'])}` plus the method's options and {seed}",
        f"- seeds: {', '.join(map(str, seeds))} (the same for every method); per-seed values in "
        f"`{setting}_{optimizer}.json`",
        "",
    ]
    gaps = suppression_table(record)
    if gaps:
        lines += gaps
        checks = setting_checks(record)
        if checks:
            lines += ["| check | met | numbers |", "|---|---|---|"]
            lines += [f"| {c} | {'yes' if met else 'NO'} | {n} |" for c, met, n in checks]
            lines.append("")
    lines += methods_table(record, modalities_of(setting))[:-1]
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


def time_section(by_label: dict[str, dict[str, dict[str, float]]], groups: str, seed: int, accuracy: set[str]) -> list[str]:
    """The time and memory table of the timing runs (`by_label`: [`time_memory`] per label of
    [`timing_configurations`]; `accuracy`: the labels the accuracy runs trained with) of `groups`."""
    if not by_label:
        return []
    steps = next(iter(next(iter(by_label.values())).values()))["steps"]
    lines = [
        "## Time and memory",
        "",
        f"Time per optimizer step (forward, backward, modulation, optimizer) over {steps} steps of one more run per "
        f"method and encoders (the AV-digits encoders at each width, or a pretrained setting's; {groups}, seed {seed}, "
        f"no evaluation), all methods of one encoders in one process taking turns of {STEPS_PER_TURN} steps so that "
        "they meet the same machine: the median, and the mean, which carries work done every few steps (AIM's "
        "prototype refresh, whose share of the time is given). Peak memory added while training, mean over the "
        "accuracy runs' seeds (with their encoders only). Ratios to `none` in this invocation.",
        "",
        "| encoders | method | ms / step (median) | × none | ms / step (mean) | × none | refresh share | peak mem (MiB) | mem × none |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for label, rows in by_label.items():
        for method, row in rows.items():
            memory = "—" if math.isnan(row["memory_bytes"]) else f"{row['memory_bytes'] / 2**20:.1f}"
            memory_ratio = "—" if math.isnan(row.get("memory_ratio", math.nan)) else f"{row['memory_ratio']:.2f}"
            lines.append(
                f"| {label}{' (accuracy runs)' if label in accuracy else ''} | `{method}` | "
                f"{row['step_seconds'] * 1000:.1f} | {row.get('time_ratio', math.nan):.2f} | "
                f"{row['mean_step_seconds'] * 1000:.1f} | {row.get('mean_time_ratio', math.nan):.2f} | "
                f"{row['refresh_share']:.1%} | {memory} | {memory_ratio} |"
            )
    return lines + [""]


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
                        help="Settings (aim_hf.data.settings): strong, hopeless, av_digits (planned, not run by default); "
                        "or the pretrained settings emoji and spoken (with --enc-root; run apart from the others).")  # fmt: skip
    parser.add_argument("--optimizers", nargs="+", default=None, choices=list(OPTIMIZERS),
                        help="Optimizers to run each setting with (default: each setting's planned ones).")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="Seeds (default: the plan's, 8 on strong with AdamW and 5 elsewhere; --quick: 0 1). On the "
                        "pretrained settings each seed is also the data seed.")  # fmt: skip
    parser.add_argument(
        "--methods", nargs="+", default=None,
        help="Modalities (trained alone, on the settings that have them) and modulation methods, each "
        "NAME[:option=value,...][@optimizer] (@sgd: only in the SGD groups, the optimizer of the method's paper); "
        "'none' is the reference of the paired differences and ratios. Default: on the AV-digits settings "
        f"{' '.join(DEFAULT_METHODS)}; on the pretrained ones each modality, every registered method and "
        f"{' '.join(COMPOSITIONS)}.",
    )  # fmt: skip
    parser.add_argument("--enc-root", type=Path, default=None,
                        help="The pretrained settings' encoders: the folders `python -m aim_hf.offline NAME ENC_ROOT/NAME` "
                        "writes (emoji: mobilenet_v2, minilm; spoken: mobilenet_v2, whisper_tiny_en).")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="A tiny budget (seconds per run): checks the harness, measures nothing.")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads per run (OMP_NUM_THREADS). The small encoders gain little from more, and on a "
        "shared machine waiting threads make step times erratic.",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="Runs at a time (the accuracies do not depend on it).")
    parser.add_argument("--timing-steps", type=int, default=150, help="Optimizer steps of the timing run; 0: no timing.")
    parser.add_argument("--timing-hidden-sizes", type=int, nargs="+", default=None,
                        help="Encoder widths of the timing runs on an AV-digits setting (default: the accuracy runs' and "
                        "128); a pretrained setting is timed on its encoders.")  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--report-split", choices=["test", "validation"], default="test",
                        help="The split the markdown tables report (a study that chooses settings: validation; the JSON "
                        "keeps both).")  # fmt: skip
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="Keep the runs' folders here and reuse the finished ones (default: a temporary folder).")  # fmt: skip
    return parser.parse_args(argv), train_options


def groups_of(args: argparse.Namespace) -> list[tuple[str, str, list[int]]]:
    """The (setting, optimizer, seeds) to run: every setting under the first optimizer (AdamW, the
    Trainer's default), then under the next, and so on. The AV-digits and the pretrained settings are
    run apart (each writes its own summary page)."""
    if len({is_pretrained(s) for s in args.settings}) > 1:
        raise ValueError("Run the AV-digits settings and the pretrained settings (emoji, spoken) in separate invocations.")
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
    if argv and argv[0] == "_time":
        time_child(argv[1], argv[2])
        return 0
    args, extra = parse_args(argv)
    groups = groups_of(args)
    # Every group's options and methods before anything trains: a missing encoder stops here.
    plans = {
        (setting, optimizer): ([*plan_options(setting, optimizer, args.quick, args.enc_root), *extra],
                               methods_of(args.methods or default_methods(setting), optimizer, modalities_of(setting)))
        for setting, optimizer, _ in groups
    }  # fmt: skip
    pretrained = is_pretrained(groups[0][0])
    summary_name, timing_name = SUMMARIES[pretrained]
    command = shlex.join(["python", "benchmarks/av_digits.py", *argv])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    args.output_dir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or Path(tmp)
        records = {}
        for setting, optimizer, seeds in groups:
            options, methods = plans[setting, optimizer]
            modalities = modalities_of(setting)
            # The runs of `aim-hf compare` (aim_hf.compare.runs): a rerun with --work-dir reuses the finished ones.
            runs = plan_group(setting, methods, seeds, options, work_dir / f"{setting}_{optimizer}")
            by_key = run_all(runs, args.jobs, args.threads)
            failed = [r for r in by_key.values() if isinstance(r, RunFailed)]
            if failed:
                raise RuntimeError(f"A benchmark run failed; see {failed[0].run.log_path}.")
            results = {m: [by_key[m, s] for s in seeds] for m in methods}
            record = collect(results, modalities, setting=setting, optimizer=optimizer, command=command,
                             train_options=options)  # fmt: skip
            name = f"{setting}_{optimizer}"
            plots = plot_accuracy(results, modalities, args.output_dir, name)
            (args.output_dir / f"{name}.json").write_text(json.dumps(record))
            section = setting_section(record if args.report_split == "test" else validation_view(record), plots)
            (args.output_dir / f"{name}.md").write_text("\n".join([f"# Benchmark: {name}", "", *section]))
            sections += section
            records[setting, optimizer] = record
            print("\n".join(section), flush=True)
        # The AV-digits settings share their encoders: the first group is timed. A pretrained setting has its own.
        timed_groups = groups if pretrained else groups[:1]
        by_label, timings, accuracy = {}, {}, set()
        for setting, optimizer, seeds in timed_groups if args.timing_steps > 0 else []:
            options, methods = plans[setting, optimizer]
            modalities = modalities_of(setting)
            timed = [m for m in methods if m not in modalities]
            options = [*options, *seed_options(setting, seeds[0])]
            configurations = timing_configurations(setting, options, args.timing_hidden_sizes) if timed else []
            for label, made, trained in configurations:
                timings[label] = time_all(timed, seeds[0], [*options, *made, "--max_steps", str(args.timing_steps)],
                                          work_dir, args.threads, label, modalities)  # fmt: skip
                by_label[label] = time_memory(records[setting, optimizer]["runs"] if trained else None, timings[label])
                accuracy |= {label} if trained else set()
        if by_label:
            (args.output_dir / timing_name).write_text(json.dumps({"command": command, "rows": by_label, "timings": timings}))
    header = [
        "# Balanced-learning benchmark" + (": pretrained encoders" if pretrained else ""),
        "",
        "Written by `benchmarks/av_digits.py`; do not edit by hand. The settings are described in `docs/settings.md`.",
        "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        *machine_description(load, args.threads),
        "",
    ]
    timed = ", ".join(f"`{setting}` with {optimizer}" for setting, optimizer, _ in timed_groups)
    report = args.output_dir / summary_name
    report.write_text("\n".join([*header, *sections, *time_section(by_label, timed, timed_groups[0][2][0], accuracy)]))
    print(report.read_text())
    return 0

if __name__ == "__main__":
    sys.exit(main())
