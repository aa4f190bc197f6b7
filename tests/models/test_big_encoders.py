"""What users of big encoders expect from the Trainer, with every modulation method: activation
(gradient) checkpointing, PEFT (LoRA) encoders, and FSDP / DeepSpeed, under which a method that
reads gradients refuses to start.

FSDP and DeepSpeed cannot run on this CPU machine: accelerate enables FSDP only for GPU-like
distributed types (a CPU run with `fsdp=...` is plain DDP) and DeepSpeed not with `cpu`. The
refusal is tested with the Trainer's flags set as those set-ups set them; that the other methods
do not need `.grad` is tested by hiding every gradient from them, as FSDP hides them.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel

from aim_hf import MODULATIONS, AIMTrainer, MultimodalModel
from dist_train import MODALITIES, NO_DROPOUT, assert_close, make_trainer, snapshot
from tiny import NUM_LABELS

STEPS, BATCH = 3, 4
# The tiny ViT/AST name their attention projections q_proj / v_proj, BERT query / value.
LORA_TARGETS = ["q_proj", "v_proj", "query", "value"]


def train(method: str, paths: dict[str, str], output_dir, **overrides) -> tuple[AIMTrainer, dict]:
    trainer = make_trainer(method, paths, output_dir, max_steps=STEPS, per_device_train_batch_size=BATCH, **overrides)
    trainer.train()
    return trainer, snapshot(trainer)


def lora_model(paths: dict[str, str]) -> MultimodalModel:
    """The tiny model of `dist_train.build_model` with every encoder wrapped by PEFT's LoRA."""
    torch.manual_seed(0)
    encoders = {
        m: get_peft_model(AutoModel.from_pretrained(paths[m], **NO_DROPOUT), LoraConfig(r=4, target_modules=LORA_TARGETS))
        for m in MODALITIES
    }
    return MultimodalModel.from_encoders(encoders, num_labels=NUM_LABELS)


@pytest.mark.parametrize("method", list(MODULATIONS))
def test_gradient_checkpointing_trains_as_without(method, encoder_paths, tmp_path):
    """Same losses, gradient norms, method metrics, state and weights with `gradient_checkpointing`
    as without, though the checkpointed layers really are recomputed in the backward pass (AIM's
    masked auxiliary pass included: its masks must be back on when its layers are recomputed)."""
    runs = {}
    for checkpointing in (False, True):
        trainer = make_trainer(
            method, encoder_paths, tmp_path / str(checkpointing), max_steps=STEPS,
            per_device_train_batch_size=BATCH, gradient_checkpointing=checkpointing,
            # AIM: the dominant encoder's masked pass has a backward (to recompute) only when L_aux trains it.
            **({"modulation_kwargs": {"aux_trains": "all"}} if method == "aim" else {}),
        )  # fmt: skip
        calls = []
        unit = next(iter(trainer.model.unit_modules("vision")[-1].values()))
        handle = unit.register_forward_hook(lambda *args: calls.append(1))
        trainer.train()
        handle.remove()
        flags = [m.gradient_checkpointing for m in trainer.model.modules() if hasattr(m, "gradient_checkpointing")]
        assert flags and all(flags) == checkpointing
        runs[checkpointing] = snapshot(trainer), len(calls)
    (checkpointed, recomputed), (plain, computed) = runs[True], runs[False]
    assert recomputed > computed
    if method == "aim":
        assert any("aim/aux_loss" in log for log in plain["logs"]), "AIM's auxiliary pass never ran"
    assert_close(checkpointed["logs"], plain["logs"], f"{method} logs")
    assert_close(checkpointed["modulation"], plain["modulation"], f"{method} state")
    assert_close(checkpointed["params"], plain["params"], f"{method} params")


@pytest.mark.parametrize("method", list(MODULATIONS))
def test_lora_encoders_train(method, encoder_paths, tmp_path):
    """With LoRA-wrapped encoders every method trains the adapters and heads, never the frozen base
    weights; AIM scores and masks the adapters' units."""
    model = lora_model(encoder_paths)
    lora = {n for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(not p.any() for n, p in model.named_parameters() if "lora_B" in n), "LoRA's B must start at 0"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer, result = train(method, encoder_paths, tmp_path, model=model)
    changed = {n for n, p in result["params"].items() if not torch.equal(p, before[n])}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert not changed & frozen, f"{method} changed frozen weights: {sorted(changed & frozen)[:3]}"
    assert changed & lora and changed - lora, f"{method} left the adapters or the heads untrained"
    for m in MODALITIES:
        units = {name for group in model.unit_modules(m) for name in group}
        assert units and all(".lora_" in name for name in units), units
    if method == "aim":
        for m in MODALITIES:
            assert set(trainer.modulation.importance[m]) == {n for g in model.unit_modules(m) for n in g}
        assert any("aim/aux_loss" in log for log in result["logs"]), "AIM's auxiliary pass never ran"


def test_lora_with_reentrant_checkpointing_trains_the_adapters(encoder_paths, tmp_path):
    """A reentrant checkpoint gives no gradient to a layer whose input needs none (the output of
    frozen embeddings): the model makes the embeddings' output require one."""
    model = lora_model(encoder_paths)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    train("aim", encoder_paths, tmp_path, model=model, gradient_checkpointing=True,
          gradient_checkpointing_kwargs={"use_reentrant": True})  # fmt: skip
    for m in MODALITIES:
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if f"{m}." in n and n in before), m


@pytest.mark.parametrize("sharding", ["fsdp", "deepspeed"])
@pytest.mark.parametrize("method", list(MODULATIONS))
def test_sharded_gradients_refused_by_gradient_readers(method, sharding, encoder_paths, tmp_path, monkeypatch):
    """Under FSDP or DeepSpeed (the Trainer's flags set as accelerate's plugins set them) a method that
    reads gradients fails when the trainer is built, naming itself and the sharding; the others start."""
    create = AIMTrainer.create_accelerator_and_postprocess

    def sharded(self: AIMTrainer) -> None:
        create(self)
        setattr(self, f"is_{sharding}_enabled", True)

    monkeypatch.setattr(AIMTrainer, "create_accelerator_and_postprocess", sharded)
    name = {"fsdp": "FSDP", "deepspeed": "DeepSpeed"}[sharding]
    if MODULATIONS[method].reads_gradients:
        with pytest.raises(ValueError, match=rf"modulation='{method}' reads the encoders' gradients.*{name}"):
            make_trainer(method, encoder_paths, tmp_path)
    else:
        assert make_trainer(method, encoder_paths, tmp_path).modulation.name == method


@pytest.mark.parametrize("method", [name for name, cls in MODULATIONS.items() if not cls.reads_gradients])
def test_methods_that_read_no_gradients_train_the_same_without_them(method, encoder_paths, tmp_path):
    """A method that does not declare `reads_gradients` trains exactly as before when every `.grad`
    is hidden from its step (None, as FSDP leaves the unwrapped parameters' and DeepSpeed's)."""
    _, plain = train(method, encoder_paths, tmp_path / "plain")
    trainer = make_trainer(method, encoder_paths, tmp_path / "blind", max_steps=STEPS, per_device_train_batch_size=BATCH)
    step = trainer.modulation.on_gradients_ready

    def blind_step(ctx) -> None:
        grads = {p: p.grad for p in ctx.model.parameters()}
        for p in grads:
            p.grad = None
        try:
            step(ctx)
        finally:
            for p, grad in grads.items():
                p.grad = grad

    trainer.modulation.on_gradients_ready = blind_step
    trainer.train()
    blind = snapshot(trainer)
    assert_close(blind["logs"], plain["logs"], f"{method} logs")
    assert_close(blind["params"], plain["params"], f"{method} params")
