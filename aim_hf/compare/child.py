"""One run of a comparison, in its own process: `python -m aim_hf.compare.child RESULT.json [aim-hf
train options]` trains exactly as `aim-hf train` does (the same parser, trainer and run) and writes
its metrics, the memory training added and its log history to RESULT.json.

Every evaluation during training also scores the test split (where the data has one), so that the
test accuracy of the evaluation best on validation is read from the log (`aim_hf.stats.best_on_validation`)
without another run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line.")


def measure_callback():
    """A Trainer callback that measures the memory training adds (CPU: the peak resident set, reset
    when training begins, on Linux; GPU: `torch.cuda.max_memory_allocated`) and keeps the log history."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()
    linux = os.path.exists("/proc/self/clear_refs")

    class Measure(TrainerCallback):
        def __init__(self) -> None:
            self.log_history: list[dict[str, Any]] = []
            self.memory: dict[str, Any] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.memory = {"kind": "cuda max_memory_allocated", "baseline_bytes": torch.cuda.memory_allocated()}
            elif linux:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current resident set
                self.memory = {"kind": "cpu VmHWM", "baseline_bytes": _rss_bytes()}

        def on_train_end(self, args, state, control, **kwargs):
            if self.memory:
                self.memory["peak_bytes"] = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()
            self.log_history = [dict(entry) for entry in state.log_history]

    return Measure()


def rename_eval_keys(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`eval_validation_*` -> `eval_*` (what the plots read) and `eval_test_*` -> `test_curve_*`."""
    return [
        {k.replace("eval_validation_", "eval_", 1).replace("eval_test_", "test_curve_", 1): v for k, v in entry.items()}
        for entry in log_history
    ]


def run_child(result_path: str, train_argv: list[str]) -> None:
    """Train once with `aim-hf train <train_argv>` and write the result to `result_path`."""
    from aim_hf.scripts.train import build_trainer, parse_train_args, run

    measure = measure_callback()
    trainer, validation, test = build_trainer(*parse_train_args(train_argv), callbacks=[measure])
    if test is not None:
        trainer.eval_dataset = {"validation": validation, "test": test}
    metrics = run(trainer, validation, test)
    history = rename_eval_keys(measure.log_history) if test is not None else measure.log_history
    Path(result_path).write_text(json.dumps({"metrics": metrics, "memory": measure.memory, "log_history": history}))


if __name__ == "__main__":
    run_child(sys.argv[1], sys.argv[2:])
