"""`AIMTrainer`: a `transformers.Trainer` that trains a [`MultimodalModel`] with a modulation method."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils import logging

from .collator import MultimodalCollator, MultimodalProcessor
from .metrics import MultimodalMetrics
from .modeling import MultimodalModel, MultimodalOutput
from .modulation import build_modulation
from .modulation.base import all_reduce_sum
from .training_args import AIMConfig

logger = logging.get_logger(__name__)

MODULATION_STATE_NAME = "modulation_state.pt"


class AIMTrainer(Trainer):
    """Trainer for [`MultimodalModel`] with balanced multimodal learning (`args.modulation`:
    `"aim"`, `"ogm_ge"` or `"none"`).

    Beyond `Trainer` it: runs the modulation method at its hook points (see
    `aim_hf.modulation.base`); logs the loss components, each probe's training accuracy and the
    method's metrics (averaged over the logging interval, reduced across processes); saves the
    method's state in every checkpoint and restores it on `train(resume_from_checkpoint=...)`; and
    defaults `compute_metrics` to fused and per-probe accuracy / macro-F1 and the collator to a
    [`MultimodalCollator`] over `processing_class` (a [`MultimodalProcessor`]).
    """

    # compute_loss returns the mean over the micro-batch; Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: MultimodalModel,
        args: AIMConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: MultimodalProcessor | None = None,
        compute_metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, MultimodalModel):
            raise TypeError(f"AIMTrainer trains a MultimodalModel, got {type(model).__name__}.")
        if args is None:
            args = AIMConfig(output_dir="aim_hf_output")
        if not isinstance(args, AIMConfig):
            raise TypeError(f"AIMTrainer takes an AIMConfig as args, got {type(args).__name__}.")
        if data_collator is None and processing_class is not None:
            data_collator = MultimodalCollator(processing_class)
        if compute_metrics is None:
            compute_metrics = MultimodalMetrics(model.config.num_labels)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            **kwargs,
        )
        self.modulation = build_modulation(args.modulation, model, args)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._step_stats: torch.Tensor | None = None

    # ------------------------------------------------------------------------------ the step
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ):
        training = model.training
        extra = self.modulation.forward_kwargs() if training else {}
        outputs: MultimodalOutput = model(**inputs, **extra)
        loss = outputs.loss
        if loss is None:
            raise ValueError("The batch has no 'labels': AIMTrainer needs a label for every example.")
        if training:
            labels = inputs["labels"]
            extra_loss = self.modulation.compute_loss(outputs, labels)
            if extra_loss is not None:
                loss = loss + extra_loss
            self._accumulate_step_stats(outputs, labels)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The last micro-batch of an optimizer step: gradients are complete (and all-reduced).
        if self.accelerator.sync_gradients:
            self._end_of_step()
        return loss

    def _accumulate_step_stats(self, outputs: MultimodalOutput, labels: torch.Tensor) -> None:
        """Per-sample sums of the fused loss, each probe's loss and correct count, and the count."""
        with torch.no_grad():
            n = labels.shape[0]
            values = [outputs.fused_loss.float() * n]
            for logits in outputs.probe_logits.values():
                values.append(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
            for logits in outputs.probe_logits.values():
                values.append((logits.argmax(-1) == labels).sum().float())
            values.append(torch.tensor(float(n), device=labels.device))
            stats = torch.stack(values)
        self._step_stats = stats if self._step_stats is None else self._step_stats + stats

    def _end_of_step(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        scaler = getattr(self.accelerator, "scaler", None)
        grad_scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        metrics = self.modulation.step(model, self.state.global_step, self.state.max_steps, grad_scale)
        if self._step_stats is not None:
            stats = all_reduce_sum(self._step_stats).tolist()
            self._step_stats = None
            count, m = stats[-1], len(model.modalities)
            metrics["loss/fused"] = stats[0] / count
            for i, modality in enumerate(model.modalities):
                metrics[f"loss/probe/{modality}"] = stats[1 + i] / count
                metrics[f"probe_accuracy/{modality}"] = stats[1 + m + i] / count
        for key, value in metrics.items():
            self._metrics[key].append(value)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        # Merge the step metrics into training logs only (an eval log has no "loss" key).
        if "loss" in logs and self._metrics:
            for key, values in self._metrics.items():
                logs[key] = sum(values) / len(values)
            self._metrics.clear()
        super().log(logs, *args, **kwargs)

    # ----------------------------------------------------------------------- checkpoint state
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            torch.save(
                {"modulation": self.args.modulation, "state": self.modulation.state_dict()},
                os.path.join(folder, MODULATION_STATE_NAME),
            )

    def _load_modulation_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, MODULATION_STATE_NAME)
        if not os.path.isfile(path):
            logger.warning(f"{checkpoint} holds no {MODULATION_STATE_NAME}: the modulation starts from a fresh state.")
            return
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved["modulation"] != self.args.modulation:
            raise ValueError(
                f"{checkpoint} was trained with modulation={saved['modulation']!r} but this run uses "
                f"{self.args.modulation!r}; resume with the same method or start a new output_dir."
            )
        self.modulation.load_state_dict(saved["state"])

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No checkpoint found in output_dir {self.args.output_dir!r} to resume from.")
        if isinstance(resume_from_checkpoint, (str, os.PathLike)):
            self._load_modulation_state(str(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)
