"""`AIMTrainer`: a `transformers.Trainer` that trains a [`MultimodalModel`] with a modulation method."""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_pt_utils import nested_detach
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, sort_checkpoints
from transformers.utils import CONFIG_NAME, logging

from .collator import MultimodalCollator, MultimodalProcessor
from .learning_rates import mapped_learning_rates
from .metrics import MultimodalMetrics
from .model_card import MODEL_CARD_NAME, write_model_card
from .modeling import MultimodalModel, MultimodalOutput
from .modulation import MODULATIONS, HookContext, build_modulation
from .modulation.mechanics import StepSums, modality_param_groups
from .training_args import AIMConfig

logger = logging.get_logger(__name__)

MODULATION_STATE_NAME = "modulation_state.pt"


class PushToHubError(RuntimeError):
    """Pushing to the Hub failed; the local model and checkpoints are untouched."""


class AIMTrainer(Trainer):
    """Trainer for [`MultimodalModel`] with balanced multimodal learning (`args.modulation`: a method
    of `aim_hf.modulation.MODULATIONS`, which `aim-hf methods` lists; the method's own options in
    `args.modulation_kwargs`).

    Beyond `Trainer` it: runs the modulation method at its hook points (see
    `aim_hf.modulation.base`); gives each modality's encoder its own optimizer parameter groups
    (`create_optimizer`), whose learning rate a method can scale for a step; logs the loss
    components, each probe's training accuracy and the method's metrics (averaged over the logging
    interval, reduced across processes); saves the method's state in every checkpoint and restores
    it on `train(resume_from_checkpoint=...)`; hands the predictions over by name (`prediction_step`),
    and `predict()` works on unlabelled data; and defaults `compute_metrics` to fused and per-probe
    accuracy / macro-F1 (`aim_hf.metrics`) and the collator to a [`MultimodalCollator`] over
    `processing_class` (a [`MultimodalProcessor`]). Every saved model gets a model card with plots
    (`aim_hf.model_card`); a failed Hub push raises `PushToHubError`. Under FSDP or DeepSpeed it
    refuses, when built, a method that reads gradients (`Modulation.reads_gradients`): they are
    sharded outside `.grad`.
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
        # forward(**modality_inputs) makes Trainer believe the model normalises its loss over the
        # accumulated batch; it does not (transformers releases without `loss_is_scaled_for_ga`
        # read only this flag).
        self.model_accepts_loss_kwargs = False
        self.modulation = build_modulation(args.modulation, model, args)
        self._refuse_sharded_gradients()
        # A learning_rate_mapping key that takes no parameter fails here, before train().
        mapped_learning_rates(model, model.modalities, args.learning_rate_mapping)
        self.add_callback(_ModalityLearningRates(self))
        self.add_callback(_AfterOptimizerStep(self))  # after the one above: learning rates restored first
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._step_stats = StepSums()
        self._micro_batch = 0  # index of the coming training micro-batch in its optimizer step
        self._lr_scales: dict[str, float] = {}  # the method's factors for the coming optimizer.step()

    def _refuse_sharded_gradients(self) -> None:
        """Fail now if the method reads `.grad` (`Modulation.reads_gradients`) and FSDP or DeepSpeed
        shards the gradients: the unwrapped model's `.grad` would be None or a shard, and the method
        would silently do nothing (or act on a part of each gradient)."""
        sharding = "DeepSpeed" if self.is_deepspeed_enabled else "FSDP" if self.is_fsdp_enabled else None
        if sharding and self.modulation.reads_gradients:
            works = ", ".join(name for name, cls in MODULATIONS.items() if not cls.reads_gradients)
            raise ValueError(
                f"modulation={self.args.modulation!r} reads the encoders' gradients, which {sharding} keeps sharded "
                f"outside .grad, so it cannot run under {sharding}: train it with DDP (plain multi-process, "
                f"without fsdp / deepspeed), or pick a method that does not read gradients ({works})."
            )

    # ------------------------------------------------------------------------------ the optimizer
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer, with each modality's encoder parameters in their own parameter groups
        (see `_parameter_groups`), so that a method can scale one encoder's update
        (`HookContext.scale_lr`). Optimizers that Trainer builds from something other than parameter
        groups (factories such as Muon, GaLore, LOMO, layer-wise ones) and bitsandbytes' 8-bit ones
        keep Trainer's two groups. Then the modulation sees the optimizer (`Modulation.on_train_begin`)."""
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            cls, kwargs = self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            plain = isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and "bitsandbytes" not in str(cls)
            if plain and not kwargs.keys() & {"params", "model", "optimizer_dict"}:
                self.optimizer = cls(self._parameter_groups(opt_model), **kwargs)
            elif self.args.learning_rate_mapping:
                raise ValueError(
                    f"learning_rate_mapping needs an optimizer built from parameter groups; {self.args.optim} is not."
                )
        optimizer = super().create_optimizer(model)
        ctx = self._context(optimizer=optimizer)
        self.modulation.on_train_begin(ctx)
        if ctx.warnings:
            logger.warning_once(" ".join(ctx.warnings))
        return optimizer

    def _parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The trainable parameters split, as Trainer does, into weight decay / no decay, each half
        further by owner (one set per modality's encoder, tagged `"modality": m`; the heads, fusion and
        probes, tagged None) and by learning rate (`args.learning_rate_mapping`: a group of mapped
        parameters carries its own `"lr"`). Groups at `learning_rate` come first, so that the logged
        `learning_rate` (the first group's) stays the default one. Empty groups are left out."""
        decay = set(self.get_decay_parameter_names(model))
        unwrapped = self.accelerator.unwrap_model(model)
        owner = {id(p): m for m in unwrapped.modalities for p in unwrapped.encoders[m].parameters()}
        mapped = mapped_learning_rates(unwrapped, unwrapped.modalities, self.args.learning_rate_mapping)
        lr_of = {id(p): mapped[name] for name, p in unwrapped.named_parameters() if name in mapped}
        params: dict[tuple[str | None, float | None, bool], list[nn.Parameter]] = defaultdict(list)
        for name, p in model.named_parameters():
            if p.requires_grad:
                params[owner.get(id(p)), lr_of.get(id(p)), name in decay].append(p)
        rank = {m: i for i, m in enumerate([*unwrapped.modalities, None])}

        def order(key: tuple[str | None, float | None, bool]) -> tuple[bool, int, float, bool]:
            m, lr, decays = key
            return lr is not None, rank[m], lr or 0.0, not decays

        groups = []
        for m, lr, decays in sorted(params, key=order):
            weight_decay = self.args.weight_decay if decays else 0.0
            group = {"params": params[m, lr, decays], "weight_decay": weight_decay, "modality": m}
            if lr is not None:
                group["lr"] = lr
            groups.append(group)
        return groups

    # ------------------------------------------------------------------------------ the step
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ):
        if inputs.get("labels") is None:
            raise ValueError("The batch has no 'labels': AIMTrainer needs a label for every example.")
        if not model.training:
            outputs = self._evaluation_outputs(model, inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        labels = inputs["labels"]
        # Micro-batch j of process r is the dataloader's batch j * world + r of the step (accelerate deals
        # batches round-robin): `first_example` places it in the step's global batch.
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        ctx = self._context(
            grad_scale=self._grad_scale(),
            micro_batch=self._micro_batch,
            first_example=(self._micro_batch * world + rank) * self.args.per_device_train_batch_size,
            inputs={k: v for k, v in inputs.items() if k != "labels"},
            labels=labels,
        )
        self._micro_batch += 1
        self.modulation.on_micro_batch_begin(ctx)
        outputs: MultimodalOutput = model(**inputs, **ctx.forward_kwargs)
        ctx.outputs = outputs
        self.modulation.on_forward_end(ctx)
        loss = outputs.loss if ctx.loss is None else outputs.loss + ctx.loss
        self._accumulate_step_stats(outputs, labels)
        return (loss, outputs) if return_outputs else loss

    def _context(self, **fields: Any) -> HookContext:
        """A `HookContext` for the modulation's hooks at the current step, with `fields` set."""
        return HookContext(
            model=self.accelerator.unwrap_model(self.model),
            step=self.state.global_step,
            max_steps=self.state.max_steps,
            seed=self.args.seed,
            autocast=self.accelerator.autocast,
            **fields,
        )

    def _evaluation_outputs(self, model: nn.Module, inputs: dict[str, Any]) -> MultimodalOutput:
        """The model's outputs at evaluation and prediction, labelled or not: the method's evaluation
        logits (`Modulation.on_prediction_step`) replace the fused ones, and with labels the fused part
        of the loss is recomputed from them."""
        outputs: MultimodalOutput = model(**inputs)
        ctx = self._context(outputs=outputs)
        self.modulation.on_prediction_step(ctx)
        logits = ctx.logits
        if logits is not None:
            outputs.logits = logits
            if outputs.loss is not None:
                fused_loss = nn.functional.cross_entropy(logits.float(), inputs["labels"])
                outputs.loss = outputs.loss - outputs.fused_loss + fused_loss
                outputs.fused_loss = fused_loss
        return outputs

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, Any] | None, torch.Tensor | None]:
        """Trainer's evaluation step, with the predictions keyed by name (`{"logits": ..., "probe_logits":
        {modality: ...}, ...}`: the model's outputs but the loss and `ignore_keys`, default the config's
        `keys_to_ignore_at_inference`), so that `compute_metrics` finds each output by its name. A batch
        without labels (unlabelled data, `predict()`) gives the predictions, no loss."""
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            if labels is not None:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach().mean()
            else:
                loss, outputs = None, self._evaluation_outputs(model, inputs)
        if prediction_loss_only:
            return loss, None, None
        if ignore_keys is None:
            ignore_keys = self.model.config.keys_to_ignore_at_inference
        predictions = {k: v for k, v in outputs.items() if k not in ignore_keys and k != "loss"}
        return loss, nested_detach(predictions), labels

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
            self._step_stats.add(torch.stack(values))

    def _grad_scale(self) -> float | None:
        """The GradScaler's scale under fp16 loss scaling (constant within an optimizer step), else None."""
        scaler = getattr(self.accelerator, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else None

    def _end_of_step(self) -> None:
        ctx = self._context(grad_scale=self._grad_scale())
        self.modulation.on_gradients_ready(ctx)
        self._micro_batch = 0
        self._lr_scales = ctx.lr_scales
        metrics, model = ctx.metrics, ctx.model
        totals = self._step_stats.reduce()
        if totals is not None:
            stats = totals.tolist()
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
        # The modulation state goes in first: Trainer writes trainer_state.json after every other
        # file, so that file marks a complete checkpoint (see `last_complete_checkpoint`).
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            torch.save(
                {"modulation": self.args.modulation, "state": self.modulation.state_dict()},
                os.path.join(folder, MODULATION_STATE_NAME),
            )
        super()._save_checkpoint(model, trial)

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

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        if not self._loads_through_from_pretrained(target):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_weights(target, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        target = self.accelerator.unwrap_model(self.model)
        if not self._loads_through_from_pretrained(target):
            return super()._load_best_model()
        logger.info(f"Loading best model from {self.state.best_model_checkpoint} (score: {self.state.best_metric}).")
        self._load_weights(target, self.state.best_model_checkpoint)

    def _loads_through_from_pretrained(self, target: nn.Module) -> bool:
        """Whether checkpoint weights are loaded by `_load_weights` (DeepSpeed and FSDP keep Trainer's own loaders)."""
        return isinstance(target, MultimodalModel) and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    @staticmethod
    def _load_weights(target: MultimodalModel, checkpoint: str) -> None:
        """Copy a checkpoint's weights into `target`. Trainer restores weights with `load_state_dict`,
        but `save_pretrained` writes some encoders (ViT, AST in transformers 5) under legacy key names
        that only `from_pretrained` maps back (huggingface/transformers#43701): those layers would
        silently keep their current weights. Load through `from_pretrained` instead."""
        state = MultimodalModel.from_pretrained(checkpoint).state_dict()
        expected = target.state_dict()
        differ = sorted(set(state) ^ set(expected))
        differ += sorted(k for k in state.keys() & expected.keys() if state[k].shape != expected[k].shape)
        if differ:
            raise ValueError(
                f"{checkpoint} holds another model than the one being trained ({len(differ)} weights are "
                f"missing, unexpected or of another shape, e.g. {differ[:3]}). Resume with the model that wrote it, "
                "or start a new output_dir."
            )
        target.load_state_dict(state)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
        if isinstance(resume_from_checkpoint, (str, os.PathLike)):
            if not os.path.isfile(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME)):
                raise ValueError(
                    f"{resume_from_checkpoint} is not a complete checkpoint (no {TRAINER_STATE_NAME}: missing, or "
                    "its save was interrupted). Resume from an earlier checkpoint, or with resume_from_checkpoint=True "
                    "to take the newest complete one."
                )
            self._load_modulation_state(str(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # ------------------------------------------------------------------------ model card, Hub
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        # Every saved model (checkpoints, save_model, push_to_hub) gets its card and plots.
        self.create_model_card(output_dir=output_dir)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset: str | None = None,
        tags: str | list[str] | None = None,
        license: str | None = None,
        language: str | list[str] | None = None,
        template_path: str | None = None,
        output_dir: str | None = None,
    ) -> None:
        """Write the model card (`README.md`, see `aim_hf.model_card`) and its plots into `output_dir`
        (default `args.output_dir`). `push_to_hub(dataset=..., tags=..., license=...)` passes its extra
        arguments here."""
        if not self.args.should_save:
            return
        repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id
        write_model_card(
            self,
            self.modulation,
            output_dir or self.args.output_dir,
            model_name=model_name,
            repo_id=repo_id,
            dataset=dataset,
            tags=tags,
            license=license,
            language=language,
            template_path=template_path,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Trainer copies only the config and weights from the checkpoint into output_dir before
        # pushing output_dir; the card, its plots and the model's code files (auto_map) go too.
        if self.is_world_process_zero() and self.args.hub_strategy != HubStrategy.END:
            for name in os.listdir(checkpoint_folder):
                if name == MODEL_CARD_NAME or name.endswith((".png", ".py")):
                    shutil.copy(os.path.join(checkpoint_folder, name), os.path.join(self.args.output_dir, name))
        super()._push_from_checkpoint(checkpoint_folder)

    def _push_failed(self, action: str, err: Exception) -> PushToHubError:
        """One line: what failed and why, what is kept locally (only what was really saved), what to do."""
        from huggingface_hub import constants

        repo = getattr(self, "hub_model_id", None) or self.args.hub_model_id or os.path.basename(self.args.output_dir)
        output_dir = self.args.output_dir
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        if os.path.isfile(os.path.join(output_dir, CONFIG_NAME)):
            kept = f"Nothing local is lost: the model and its card are saved in {output_dir!r}"
            retry = f"push again (`trainer.push_to_hub()`, or `hf upload {repo} {output_dir}`)"
        else:
            kept, retry = "Nothing was trained or saved yet", "start again"
        return PushToHubError(
            f"Could not {action} the Hub repo {repo!r} at {constants.ENDPOINT}: {cause}. {kept}. Check the token "
            f"(HF_TOKEN or `hub_token`, with write access), the network and HF_ENDPOINT, then {retry}."
        )

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        try:
            super().init_hf_repo(token=token, private=private)
        except Exception as err:  # any failure to reach or use the Hub: say what is safe and what to check
            raise self._push_failed("create", err) from err

    def push_to_hub(self, *args: Any, **kwargs: Any):
        if getattr(self, "hub_model_id", None) is None:
            # Trainer creates the repo before saving: save first, so that a Hub failure never costs the model.
            self.save_model(_internal_call=True)
        try:
            return super().push_to_hub(*args, **kwargs)
        except PushToHubError:
            raise
        except Exception as err:  # any failure to reach or use the Hub: say what is safe and what to check
            raise self._push_failed("push to", err) from err


class _ModalityLearningRates(TrainerCallback):
    """Applies the modulation's learning-rate factors (`HookContext.scale_lr`) to the encoders' parameter groups for one optimizer
    step: set at `on_pre_optimizer_step` (gradients final, right before `optimizer.step()`), restored
    at `on_optimizer_step` (right after it, before the scheduler steps), so that neither the
    scheduler nor a checkpoint ever sees a scaled learning rate."""

    def __init__(self, trainer: AIMTrainer) -> None:
        self.trainer = trainer
        self._saved: list[tuple[dict[str, Any], Any]] = []

    def on_pre_optimizer_step(self, args: AIMConfig, state: Any, control: Any, **kwargs: Any) -> None:
        scales, self.trainer._lr_scales = self.trainer._lr_scales, {}
        if not scales:
            return
        groups = modality_param_groups(self.trainer.optimizer, required=scales)
        for m, k in scales.items():
            for group in groups[m]:
                self._saved.append((group, group["lr"]))
                group["lr"] = group["lr"] * k

    def on_optimizer_step(self, args: AIMConfig, state: Any, control: Any, **kwargs: Any) -> None:
        for group, lr in self._saved:
            group["lr"] = lr
        self._saved.clear()


class _AfterOptimizerStep(TrainerCallback):
    """Calls the modulation's `on_optimizer_step` right after each `optimizer.step()`."""

    def __init__(self, trainer: AIMTrainer) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args: AIMConfig, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.modulation.on_optimizer_step(self.trainer._context(optimizer=self.trainer.optimizer))


def last_complete_checkpoint(output_dir: str) -> str:
    """The newest checkpoint in `output_dir` whose save finished, skipping (with a warning) newer
    ones that a crash interrupted; a ValueError if there is none."""
    checkpoints = sort_checkpoints(output_dir) if os.path.isdir(output_dir) else []
    for checkpoint in reversed(checkpoints):
        if os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_NAME)):
            return checkpoint
        logger.warning(
            f"Skipping {checkpoint}: it has no {TRAINER_STATE_NAME}, so its save was interrupted. "
            "Delete it once the run has resumed from an earlier checkpoint."
        )
    raise ValueError(f"No complete checkpoint found in output_dir {output_dir!r} to resume from.")


def leave_process_group() -> None:
    """Wait for every process, then destroy the default process group (if one is up), at the end of
    a script: a gloo group left alive while another process exits can abort the process ("terminate
    called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
