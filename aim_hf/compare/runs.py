"""The runs of a comparison: their `aim-hf train` options, their folders in the work folder (a
finished run is reused when its options are identical), and running them, `jobs` at a time, each in
its own child process (`aim_hf.compare.child`, started from a fork server), with a progress line."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

# Before every run's own options (which override them): no progress bars in the runs' logs.
BASE_TRAIN_OPTIONS = ["--disable_tqdm", "true"]


def method_options(spec: str, modalities: Sequence[str]) -> list[str]:
    """`aim-hf train` options of a run spec `NAME[:key=value,...]`: NAME is a modality of
    `modalities` (trained alone, the others blanked) or a modulation method. A key that is an `aim-hf
    train` option (e.g. `learning_rate`) is passed as `--key value`; any other key is one of the
    method's own options and goes into `--modulation_kwargs` (values read as JSON where they parse,
    else as strings), e.g. `ogm_ge:alpha=0.3,mode=gradient` or `aim:r_max=0.25`."""
    name, _, extra = spec.partition(":")
    options = ["--modulation", "none", "--only_modality", name] if name in modalities else ["--modulation", name]
    own: dict[str, Any] = {}
    for item in filter(None, extra.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"method {spec!r}: expected key=value, got {item!r}.")
        if key in train_option_names():
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
def train_option_names() -> frozenset[str]:
    """The option names (dests) `aim-hf train` takes."""
    from aim_hf.scripts.train import build_parser

    return frozenset(action.dest for action in build_parser()._actions)


def safe_name(spec: str) -> str:
    """A run spec as a folder name."""
    return spec.replace(":", "_").replace(",", "_").replace("=", "")


@dataclass
class Run:
    """One (method, seed) of a comparison: `argv` is its whole `aim-hf train` command line (after
    `train`), and `folder` keeps its log and result."""

    method: str
    seed: int
    argv: list[str]
    folder: Path

    @property
    def result_path(self) -> Path:
        return self.folder / "result.json"

    @property
    def log_path(self) -> Path:
        return self.folder / "log.txt"

    def finished(self) -> dict[str, Any] | None:
        """The result a finished earlier run left, if it ran with exactly these options."""
        if not self.result_path.is_file():
            return None
        result = json.loads(self.result_path.read_text())
        return result if result.get("argv") == self.argv else None


def plan_runs(
    methods: Sequence[str], seeds: Sequence[int], modalities: Sequence[str], options: Sequence[str], work_dir: Path
) -> list[Run]:
    """Every (method, seed) run, seed by seed (so that an interrupted comparison leaves whole seeds),
    each trained with `--seed` and its method's options after `options` (a config file, if any, first)."""
    has_config = bool(options) and not options[0].startswith("-")
    config, rest = list(options[: int(has_config)]), list(options[int(has_config) :])
    runs = []
    for seed in seeds:
        for method in methods:
            folder = work_dir / safe_name(method) / f"seed{seed}"
            argv = [*config, *BASE_TRAIN_OPTIONS, *rest, "--output_dir", str(folder / "model"), "--seed", str(seed),
                    *method_options(method, modalities)]  # fmt: skip
            runs.append(Run(method, seed, argv, folder))
    return runs


@dataclass
class RunFailed:
    """A run that failed: its log says why."""

    run: Run
    returncode: int


@dataclass
class Progress:
    """The progress line: the runs under way, those done and left, and the time left, estimated from
    the wall time of the runs this invocation trained."""

    total: int
    jobs: int
    done: int = 0
    running: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    write: Callable[[str], None] = functools.partial(print, flush=True)

    def line(self) -> str:
        left = self.total - self.done
        estimate = ""
        if self.seconds and left:
            remaining = statistics.fmean(self.seconds) * left / min(self.jobs, left)
            estimate = f", about {_duration(remaining)} left"
        under_way = f"; running {', '.join(self.running)}" if self.running else ""
        return f"[{time.strftime('%H:%M:%S')}] {self.done}/{self.total} runs done, {left} left{estimate}{under_way}"

    def start(self, name: str) -> None:
        with self.lock:
            self.running.append(name)
            self.write(self.line())

    def finish(self, name: str, seconds: float | None, note: str) -> None:
        """`seconds`: the run's wall time, None for a reused run (it does not count in the estimate)."""
        with self.lock:
            if name in self.running:
                self.running.remove(name)
            self.done += 1
            if seconds is not None:
                self.seconds.append(seconds)
            self.write(f"{self.line()}  ({name}: {note})")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


@functools.cache
def _context() -> multiprocessing.context.BaseContext:
    """Runs start from a fork server that has imported the training code once: each run is a fresh
    process (its own memory, log and exit status) without paying the imports again (seconds each)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["aim_hf.compare.child"])
    return context


def _child(result_path: str, argv: list[str], log_path: str, env: dict[str, str]) -> None:
    """The child process: its output into its log, `env` set, then `aim_hf.compare.child.run_child`."""
    os.environ.update(env)  # before CUDA starts: CUDA_VISIBLE_DEVICES
    if "OMP_NUM_THREADS" in env:
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))  # torch was imported before the variable was set
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    from aim_hf.compare.child import run_child

    run_child(result_path, argv)


def _train(run: Run, env: dict[str, str]) -> int:
    """Train `run` in a child process, its output into its log; returns the exit status."""
    shutil.rmtree(run.folder, ignore_errors=True)
    run.folder.mkdir(parents=True)
    process = _context().Process(target=_child, args=(str(run.result_path), run.argv, str(run.log_path), env))
    process.start()
    process.join()
    return process.exitcode


def run_all(
    runs: Sequence[Run], jobs: int = 1, threads: int | None = None, gpus: int = 0, progress: Progress | None = None
) -> dict[tuple[str, int], dict[str, Any] | RunFailed]:
    """Train every run not already finished, `jobs` at a time; returns by (method, seed) its result
    (the child's, with `method`, `seed`, `argv` and `wall_seconds`) or a [`RunFailed`]. `threads`:
    torch threads per run (OMP_NUM_THREADS; None: inherited). With `gpus` GPUs each job slot owns one,
    `CUDA_VISIBLE_DEVICES` set to slot % gpus: one run per GPU when `jobs == gpus`."""
    progress = progress or Progress(len(runs), jobs)
    slots: Queue[int] = Queue()
    for slot in range(jobs):
        slots.put(slot)

    def one(run: Run) -> dict[str, Any] | RunFailed:
        name = f"{run.method} seed {run.seed}"
        result = run.finished()
        if result is not None:
            progress.finish(name, None, "reused")
            return result
        slot = slots.get()
        env = {}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        progress.start(name)
        started = time.time()
        try:
            returncode = _train(run, env)
        finally:
            slots.put(slot)
        if returncode != 0 or not run.result_path.is_file():
            progress.finish(name, None, f"FAILED, see {run.log_path}")
            return RunFailed(run, returncode)
        result = json.loads(run.result_path.read_text())
        result.update(method=run.method, seed=run.seed, argv=run.argv, wall_seconds=time.time() - started)
        shutil.rmtree(run.folder / "model", ignore_errors=True)  # the numbers are kept, not the weights
        run.result_path.write_text(json.dumps(result))
        progress.finish(name, result["wall_seconds"], f"{result['wall_seconds']:.0f} s")
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, runs))
    return {(run.method, run.seed): result for run, result in zip(runs, results)}
