"""`aim-hf train` that waits once checkpoint-STEP is saved, so that a test can interrupt it right
there with a real SIGINT (test_cli_resume.py):

    python interrupted_cli.py STEP READY_FILE train [--option value ...]

Once checkpoint-STEP is complete it creates READY_FILE and sleeps until the signal comes.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from aim_hf.cli import main
from aim_hf.scripts import train


class WaitAfterSave(TrainerCallback):
    """After checkpoint `step` is saved: create `ready`, then wait (up to `timeout` s) to be interrupted."""

    def __init__(self, step: int, ready: str, timeout: float = 300.0) -> None:
        self.step, self.ready, self.timeout = step, ready, timeout

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            Path(self.ready).touch()
            time.sleep(self.timeout)


if __name__ == "__main__":
    step, ready, *argv = sys.argv[1:]
    train.build_trainer = functools.partial(train.build_trainer, callbacks=[WaitAfterSave(int(step), ready)])
    sys.exit(main(argv))
