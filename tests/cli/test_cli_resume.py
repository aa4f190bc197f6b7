"""`aim-hf train` interrupted after a checkpoint and run again with `--resume_from_checkpoint` ends
exactly as an uninterrupted run, for every method; the checkpoint defaults and the errors of the
resume options, before anything trains."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dist_train import assert_close, whole_run
from safetensors.torch import load_file
from transformers import TrainerCallback

from aim_hf import MODULATIONS
from aim_hf.scripts import train as train_script
from aim_hf.cli import main
from aim_hf.scripts.train import parse_train_args
from aim_hf.trainer import MODULATION_STATE_NAME

CHILD = str(Path(__file__).parents[1] / "helpers" / "interrupted_cli.py")
# 24 rows, batch 8: 3 steps per epoch. The run is interrupted once checkpoint-2 is saved, inside the
# first epoch; the resumed run crosses into the second and ends at step 4.
STEPS, INTERRUPT_AT = 4, 2
RUN = [
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--num_depth_groups", "2",
    "--max_steps", str(STEPS), "--save_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-3",
    "--modulation_start", "0", "--use_cpu", "true", "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(cli_data, tmp_path_factory):
    """uninterrupted(method) -> the [`outcome`] of an uninterrupted run of `method` (run once)."""
    outcomes: dict[str, dict] = {}

    def run(method: str) -> dict:
        if method not in outcomes:
            output_dir = tmp_path_factory.mktemp(f"uninterrupted-{method}")
            assert main(train_argv(method, output_dir, cli_data)) == 0
            outcomes[method] = outcome(output_dir)
        return outcomes[method]

    return run


def train_argv(method: str, output_dir: Path, data: list[str], *extra: str) -> list[str]:
    """`aim-hf train`'s arguments for a tiny run of `method` on `data` into `output_dir`."""
    # The tiny models' depth scores sit near chance, where AIM's capacity bound leaves no Auxiliary
    # Block: uncapped, AIM's state is not trivial.
    uncapped = ["--modulation_kwargs", '{"dam_cap": "none"}'] if method == "aim" else []
    window = [arg for key, value in whole_run(method).items() for arg in (f"--{key}", str(value))]
    return ["train", "--modulation", method, "--output_dir", str(output_dir), *data, *RUN, *uncapped, *window, *extra]


def outcome(output_dir: Path) -> dict:
    """What a run ends with: the saved weights, the modulation state of its last checkpoint, every
    logged training step and evaluation, and the final results; timings left out."""

    def timeless(entry: dict) -> dict:
        return {k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k}

    last = output_dir / f"checkpoint-{STEPS}"
    state = json.loads((last / "trainer_state.json").read_text())
    return {
        "weights": load_file(output_dir / "model.safetensors"),
        "modulation": torch.load(last / MODULATION_STATE_NAME, weights_only=False)["state"],
        "logs": [timeless(entry) for entry in state["log_history"]],
        "results": timeless(json.loads((output_dir / "all_results.json").read_text())),
    }


def assert_went_on_from_the_checkpoint(console: str) -> None:
    """The resumed run's console shows the steps after checkpoint-2 only."""
    assert "[step 1," not in console and "[step 2," not in console, console
    assert "[step 3," in console and f"[step {STEPS}," in console, console


class InterruptAfterSave(TrainerCallback):
    """Ctrl-C once checkpoint `INTERRUPT_AT` is saved: the KeyboardInterrupt a SIGINT raises there."""

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == INTERRUPT_AT:
            raise KeyboardInterrupt


# Every method is interrupted by a real SIGINT below; here one, resumed with `true` in the same process.
@pytest.mark.parametrize("method", ["aim"])
def test_interrupted_then_resumed_ends_as_uninterrupted(method, cli_data, uninterrupted, tmp_path, monkeypatch, capsys):
    expected, resumed = uninterrupted(method), tmp_path / "resumed"
    build = train_script.build_trainer
    monkeypatch.setattr(train_script, "build_trainer", functools.partial(build, callbacks=[InterruptAfterSave()]))
    assert main(train_argv(method, resumed, cli_data)) == 130
    hint = capsys.readouterr().err
    assert f"goes on from {resumed / 'checkpoint-2'}" in hint and "--resume_from_checkpoint true" in hint
    assert not (resumed / "checkpoint-3").exists()

    monkeypatch.setattr(train_script, "build_trainer", build)
    assert main(train_argv(method, resumed, cli_data, "--resume_from_checkpoint", "true")) == 0
    assert_went_on_from_the_checkpoint(capsys.readouterr().out)
    assert_close(outcome(resumed), expected, method)


@pytest.mark.parametrize("method", list(MODULATIONS))
def test_sigint_after_a_checkpoint_then_resume_from_its_path(method, cli_data, uninterrupted, tmp_path):
    """A real SIGINT to `aim-hf train` once checkpoint-2 is saved (`interrupted_cli.py` waits there),
    then `aim-hf train ... --resume_from_checkpoint OUT/checkpoint-2` in a new process."""
    expected, resumed = uninterrupted(method), tmp_path / "resumed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    ready = tmp_path / "checkpoint-saved"
    child = subprocess.Popen(
        [sys.executable, CHILD, str(INTERRUPT_AT), str(ready), *train_argv(method, resumed, cli_data)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not ready.exists():
        child.kill()
        pytest.fail(f"no checkpoint-{INTERRUPT_AT} was saved:\n{child.communicate()[1][-3000:]}")
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-3000:]
    assert f"goes on from {resumed / 'checkpoint-2'}" in err

    command = [sys.executable, "-m", "aim_hf", *train_argv(method, resumed, cli_data)]
    done = subprocess.run(
        [*command, "--resume_from_checkpoint", str(resumed / "checkpoint-2")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_went_on_from_the_checkpoint(done.stdout)
    assert_close(outcome(resumed), expected, method)


def test_checkpoint_defaults_make_a_run_resumable(tmp_path):
    """Every epoch is saved (the last 2 kept); `--save_steps N` alone saves every N steps."""
    *_, args = parse_train_args([])
    assert (args.save_strategy, args.save_total_limit) == ("epoch", 2)
    *_, args = parse_train_args(["--save_steps", "50"])
    assert (args.save_strategy, args.save_steps) == ("steps", 50)
    *_, args = parse_train_args(["--save_steps=50"])
    assert args.save_strategy == "steps"
    (tmp_path / "run.yaml").write_text("save_steps: 30\n")
    *_, args = parse_train_args([str(tmp_path / "run.yaml")])
    assert (args.save_strategy, args.save_steps) == ("steps", 30)
    *_, args = parse_train_args(["--save_steps", "50", "--save_strategy", "no"])
    assert args.save_strategy == "no"


def write_checkpoint(output_dir: Path, step: int) -> Path:
    """A (fake) complete checkpoint folder: trainer_state.json marks a finished save."""
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    "make, options, message",
    [
        (None, ["--resume_from_checkpoint", "does/not/exist"], "--resume_from_checkpoint 'does/not/exist': no such folder."),
        (None, ["--resume_from_checkpoint", "true"], "--resume_from_checkpoint true: --output_dir 'OUT' holds no complete checkpoint to resume from."),
        ("incomplete", ["--resume_from_checkpoint", "OUT/checkpoint-3"], "--resume_from_checkpoint 'OUT/checkpoint-3' is not a complete checkpoint"),
        ("complete", [], "--output_dir 'OUT' already holds checkpoints (checkpoint-3): resume with --resume_from_checkpoint true, or give --overwrite_output_dir"),
    ],
)  # fmt: skip
def test_resume_errors_come_before_training(make, options, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    out = tmp_path / "out"
    if make == "complete":
        write_checkpoint(out, 3)
    elif make == "incomplete":
        (out / "checkpoint-3").mkdir(parents=True)
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    built = []
    monkeypatch.setattr(train_script, "build_trainer", lambda *a, **k: built.append(a))
    options = [o.replace("OUT", str(out)) for o in options]
    assert main(["train", "--output_dir", str(out), *RUN, *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aim-hf train: error: {message.replace('OUT', str(out))}") and len(err.splitlines()) == 2
    assert not built  # nothing was loaded, nothing trained
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


def test_resume_true_takes_the_newest_complete_checkpoint_and_overwrite_deletes_them(tmp_path):
    out = tmp_path / "out"
    write_checkpoint(out, 2)
    newest = write_checkpoint(out, 10)
    (out / "checkpoint-12").mkdir()  # a save that was interrupted
    *_, args = parse_train_args(["--output_dir", str(out), "--resume_from_checkpoint", "True"])
    assert args.resume_from_checkpoint == str(newest)
    (tmp_path / "run.yaml").write_text(f"output_dir: {out}\nresume_from_checkpoint: true\n")  # a YAML bool
    *_, args = parse_train_args([str(tmp_path / "run.yaml")])
    assert args.resume_from_checkpoint == str(newest)
    *_, args = parse_train_args(["--output_dir", str(out), "--overwrite_output_dir"])
    assert args.resume_from_checkpoint is None
    assert not any(p.name.startswith("checkpoint-") for p in out.iterdir())
