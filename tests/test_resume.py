"""A run that crashes after a checkpoint and is resumed ends exactly as an uninterrupted run."""

from __future__ import annotations

import pytest
from transformers import TrainerCallback

from aim_hf import MODULATIONS
from dist_train import assert_close, make_trainer, snapshot

# 16 rows, batch 4: 4 steps per epoch; checkpoint 3 falls inside the first epoch, step 5 in the second.
RUN = dict(per_device_train_batch_size=4, max_steps=5, save_strategy="steps", save_steps=3)


class Crash(Exception):
    pass


class CrashAtStep(TrainerCallback):
    """Raise at the end of optimizer step `step` (before it could be checkpointed)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"simulated crash at step {self.step}")


@pytest.mark.parametrize("method", list(MODULATIONS))
def test_resume_equals_uninterrupted(method, encoder_paths, tmp_path):
    full = make_trainer(method, encoder_paths, tmp_path / "full", **RUN)
    full.train()
    expected = snapshot(full)

    crashed = make_trainer(method, encoder_paths, tmp_path / "resumed", **RUN)
    crashed.add_callback(CrashAtStep(4))
    with pytest.raises(Crash):
        crashed.train()
    assert crashed.state.global_step == 4

    resumed = make_trainer(method, encoder_paths, tmp_path / "resumed", **RUN)
    resumed.train(resume_from_checkpoint=True)
    got = snapshot(resumed)
    assert resumed.state.global_step == 5
    # It went on from checkpoint-3 with the rows steps 4 and 5 would have seen ...
    assert got["batches"][:2] == expected["batches"][3:5]
    # ... ran the modulation for the 2 remaining steps only, and ends as the uninterrupted run.
    assert got["modulation_steps"] == 2
    assert_close(got["logs"], expected["logs"], f"{method} logs")
    assert_close(got["modulation"], expected["modulation"], f"{method} state")
    assert_close(got["params"], expected["params"], f"{method} params")
