"""A run that crashes after a checkpoint and is resumed ends exactly as an uninterrupted run."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from dist_train import METHODS, assert_close, make_trainer, snapshot

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


@pytest.mark.parametrize("method", METHODS)
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


def test_load_best_model_at_end_restores_every_encoder_weight(build_model, build_processor, build_dataset, make_args):
    """`load_best_model_at_end` must bring back the best checkpoint's weights, ViT and AST layers
    included (Trainer's own loader leaves them as they are: their saved keys use legacy names)."""
    from aim_hf import AIMTrainer, MultimodalModel

    modalities = ("vision", "audio")
    trainer = AIMTrainer(
        model=build_model(modalities),
        args=make_args(
            modulation="none",
            max_steps=3,
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="steps",
            save_steps=1,
            load_best_model_at_end=True,
            metric_for_best_model="accuracy",
            learning_rate=5e-2,
        ),
        train_dataset=build_dataset(18, modalities),
        eval_dataset=build_dataset(12, modalities, seed=1),
        processing_class=build_processor(modalities),
    )
    trainer.train()
    best = MultimodalModel.from_pretrained(trainer.state.best_model_checkpoint).state_dict()
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{trainer.state.best_global_step}")
    loaded = trainer.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in best.items())
    if trainer.state.best_global_step != trainer.state.global_step:
        last = MultimodalModel.from_pretrained(f"{trainer.args.output_dir}/checkpoint-{trainer.state.global_step}").state_dict()
        assert any(not torch.equal(last[k], v) for k, v in best.items() if "encoders.vision" in k)
