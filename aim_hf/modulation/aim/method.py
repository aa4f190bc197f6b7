"""AIM: adaptive intra-network modulation (Shen, Chen, Zhang, arXiv 2508.19769), as docs/methods/aim.md
reads it: DAP scores every depth of every modality against class prototypes (`prototypes`,
`strengths`), DAM turns the scores into a strength per modality and depth (`strengths`), and PAM
switches off the most important units of the dominant modality's depth groups in an auxiliary pass
(Auxiliary Blocks, `masking`, run by `auxiliary`) whose loss trains the rest. Options: `AIMOptions`
(`options`).

Timing within an optimizer step: `on_micro_batch_begin` records the depth groups' outputs of the
masked modalities during the forward, `on_forward_end` runs the auxiliary pass from them and
accumulates statistics over the micro-batches; `on_gradients_ready` reduces them across processes
in one buffer, updates the state (and every
`prototype_every` steps the learned prototypes, broadcast from process 0), and computes the masks
the *next* step uses (so every micro-batch of a step uses the same masks). Everything that decides
a mask is a reduced value, an all-reduced gradient or a broadcast tensor, hence identical on every
process.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...modeling import MultimodalModel
from ..base import HookContext, Metric, Modulation, Paper, Summary
from ..mechanics import StepSums
from .auxiliary import GroupOutputs, auxiliary_logits
from .masking import build_masks, update_importance
from .options import AIMOptions
from .prototypes import (
    class_mean_update,
    pooled_prototypes,
    prototype_inputs,
    prototype_loss,
    refresh_learned,
)
from .strengths import (
    capped_strengths,
    dam_strengths,
    dominant_modalities,
    smoothed_centers,
    smoothed_scores,
    true_class_score_sum,
    weak_capacities,
    weak_strengths,
)


class AIM(Modulation):
    """AIM with DAP, DAM and PAM (Auxiliary Blocks); its options `self.config` (`AIMOptions`, given
    as `modulation_kwargs`); the metrics it logs per optimizer step: `metrics`."""

    name = "aim"
    label = "AIM"
    title = "AIM (Adaptive Intra-Network Modulation)"
    paper = Paper(
        "AIM: Adaptive Intra-Network Modulation for Balanced Multimodal Learning", "arXiv 2025",
        "https://arxiv.org/abs/2508.19769",
    )
    citation = """@article{shen2025aim,
  title   = {{AIM}: Adaptive Intra-Network Modulation for Balanced Multimodal Learning},
  author  = {Shen, Shu and Chen, C. L. Philip and Zhang, Tong},
  journal = {arXiv preprint arXiv:2508.19769},
  year    = {2025}
}"""
    metric_prefix = "aim"
    metrics = (
        Metric("aim/active", "1 inside the modulation window"),
        Metric("aim/score/<m>/depth_<d>", "the depth score's EMA, once the depths can be scored"),
        Metric("aim/lambda/<m>/depth_<d>", "DAM's strength computed at this step, which sizes the next step's masks"),
        Metric("aim/mu/<m>/depth_<d>", "the weak-side strength (pam='symmetric')"),
        Metric("aim/masked_fraction/<m>", "the share of m's units switched off in this step's auxiliary pass"),
        Metric("aim/aux_loss", "the auxiliary loss (steps with an auxiliary pass)"),
        Metric(
            "aim/prototype_loss",
            "learned prototypes: their mean cross-entropy at the last iteration of the latest refresh",
        ),
    )
    summary = Summary("aim/lambda", "max", "λ")
    default_start = 0.1
    Config = AIMOptions
    reads_gradients = True

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        self.num_labels = model.config.num_labels
        self.learned = self.config.prototypes == "learned"
        self.units = {m: model.unit_modules(m) for m in self.modalities}
        self.num_units = {
            m: sum(module.weight.shape[0] for group in groups for module in group.values())
            for m, groups in self.units.items()
        }
        # DAP state: prototypes[m][d] (class_mean: num_labels x dim; learned: num_labels x the depth's
        # output shape), which classes have one (class_mean), the score EMAs.
        self.prototypes: dict[str, list[torch.Tensor]] | None = None
        self.class_seen: torch.Tensor | None = None
        self._ready = False  # the depths can be scored
        self.scores: dict[str, torch.Tensor] | None = None
        # center=True: the EMA of the mean normalised pooled output per modality and depth.
        self.centers: dict[str, list[torch.Tensor]] | None = None
        # Learned prototypes are scored by their pooled form (num_labels x dim), kept beside them;
        # their mean cross-entropy at the last refresh is logged at every step.
        self._pooled: dict[str, list[torch.Tensor]] | None = None
        self.prototype_loss: float | None = None
        # Wall-clock seconds spent refreshing learned prototypes so far: the benchmark reports their
        # share of the step time.
        self.refresh_seconds = 0.0
        # One example's inputs per modality (seen at the first forward): the shapes and dtypes from
        # which a prototype pass builds the inputs its encoder call needs.
        self._templates: dict[str, dict[str, Any]] = {}
        self._template_hooks = {
            m: model.encoders[m].register_forward_pre_hook(self._template_hook(m), with_kwargs=True)
            for m in (self.modalities if self.learned else [])
        }
        # PAM state: importance EMA per unit module, the masks of the next step's Auxiliary Blocks
        # (only modalities with a block: `build_masks` leaves the others out), and the modalities
        # whose features the next auxiliary fusion detaches (`weak_only`).
        self.importance: dict[str, dict[str, torch.Tensor]] = {m: {} for m in self.modalities}
        self.masks: dict[str, dict[str, torch.Tensor]] = {}
        self.aux_detached: list[str] = []
        self._masked_units: dict[str, int] = {}  # units switched off per modality by `masks`
        self._unit_list = [
            (m, name, module) for m, groups in self.units.items() for group in groups for name, module in group.items()
        ]
        # The step's statistics (one flat float32 buffer) and the feature width per modality and depth.
        self._sums = StepSums()
        self._dims: dict[str, list[int]] | None = None
        # The depth groups' outputs of the masked modalities during a training forward, which the
        # auxiliary pass replays up to its first masked group.
        self._group_outputs = GroupOutputs(model)
        self._recording = ExitStack()


    def _template_hook(self, modality: str) -> Any:
        """A forward pre-hook that records one example of `modality`'s encoder inputs, then removes itself."""

        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            self._templates[modality] = {
                k: v[:1].detach() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
            }
            self._template_hooks.pop(modality).remove()

        return hook

    # ------------------------------------------------------------------------------ micro-batch
    def on_micro_batch_begin(self, ctx: HookContext) -> None:
        if self.masks:
            self._recording.enter_context(self._group_outputs.recording(self.masks))

    def on_forward_end(self, ctx: HookContext) -> None:
        self._recording.close()
        outputs, labels = ctx.outputs, ctx.labels
        masks, aux_loss = self.masks, None
        if masks and self._group_outputs.outputs:  # the forward ran with the recording on
            features = {m: feats[-1] for m, feats in outputs.depth_features.items()}
            with ctx.autocast():
                logits = auxiliary_logits(
                    ctx.model, ctx.inputs, features, self._group_outputs.outputs, masks,
                    detach=self.aux_detached, head_grad=self.config.aux_trains == "all",
                )  # fmt: skip
            self._group_outputs.clear()
            aux_loss = F.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            self._accumulate(outputs.depth_features, labels, aux_loss)
        if aux_loss is not None:
            ctx.add_loss(self.config.beta_aux * aux_loss)

    @property
    def _scorable(self) -> bool:
        """The depths can be scored: prototypes exist, and under `center=True` the centers too."""
        return self._ready and (self.centers is not None or not self.config.center)

    def _accumulate(
        self, depth_features: dict[str, tuple[torch.Tensor, ...]], labels: torch.Tensor, aux_loss: torch.Tensor | None
    ) -> None:
        """Add the micro-batch's class sums of normalised features (class_mean only), their sums
        (center only), true-class prototype probabilities (once the depths can be scored), class
        counts, sample count and auxiliary loss to the step's buffer. Layout: per modality and depth
        [K*dim class sums, dim sums, score sum], then [K counts, n, aux loss sum, aux n]."""
        if self._dims is None:
            self._dims = {m: [f.shape[-1] for f in depth_features[m]] for m in self.modalities}
        onehot = F.one_hot(labels, self.num_labels).float()
        parts = []
        for m in self.modalities:
            for d, feature in enumerate(depth_features[m]):
                h = F.normalize(feature.detach().float(), dim=-1)
                if not self.learned:
                    parts.append((onehot.T @ h).flatten())
                if self.config.center:
                    parts.append(h.sum(0))
                score = torch.zeros(1, device=h.device)
                if self._scorable:
                    reference = self._pooled[m][d] if self.learned else self.prototypes[m][d]
                    center = self.centers[m][d] if self.config.center else None
                    if center is not None and self.learned:  # into the normalised features' space, as class means are
                        reference = F.normalize(reference, dim=-1)
                    score = true_class_score_sum(h, reference, labels, self.config.tau, center)
                parts.append(score)
        n = float(labels.shape[0])
        tail = torch.tensor([n, 0.0, 0.0], device=labels.device)
        if aux_loss is not None:
            tail[1], tail[2] = aux_loss.detach() * n, n
        parts += [onehot.sum(0), tail]
        self._sums.add(torch.cat(parts))

    # ---------------------------------------------------------------------------- optimizer step
    def on_gradients_ready(self, ctx: HookContext) -> None:
        model, global_step, max_steps, grad_scale = ctx.model, ctx.step, ctx.max_steps, ctx.grad_scale
        totals = self._sums.reduce_unless_skipped(model, grad_scale)
        if totals is None:  # nothing added, or a step the GradScaler skips: AIM's state skips it too
            return
        class_sums, feature_sums, score_sums, counts, n, aux_sum, aux_n = self._unpack(totals)
        metrics: dict[str, float] = {}
        if self._scorable:  # as when the micro-batches were scored
            self.scores = smoothed_scores(self.scores, {m: s / n for m, s in score_sums.items()}, self.config.momentum)
        if self.config.center:
            means = {m: [total / n for total in sums] for m, sums in feature_sums.items()}
            self.centers = smoothed_centers(self.centers, means, self.config.momentum)
        if not self.learned:
            self.prototypes, self.class_seen = class_mean_update(
                self.prototypes, self.class_seen, class_sums, counts, self.config.momentum
            )
            self._ready = bool(self.class_seen.all())
        elif global_step % self.config.prototype_every == 0 and len(self._templates) == len(self.modalities):
            started = time.perf_counter()
            self.prototype_loss = self._refresh_prototypes(model, ctx.seed)
            self.refresh_seconds += time.perf_counter() - started
        update_importance(self.importance, self._unit_list, grad_scale or 1.0, self.config.momentum)

        used_counts = self._masked_units
        lambdas = None
        if self.scores is not None:
            lambdas = capped_strengths(
                dam_strengths(self.scores, self.config.alpha),
                weak_capacities(self.scores, 1.0 / self.num_labels),
                self.config.dam_cap,
            )
        mus = (
            weak_strengths(self.scores, self.config.alpha)
            if lambdas is not None and self.config.pam == "symmetric"
            else None
        )
        # The masks of the next step's Auxiliary Blocks, if that step is inside the modulation window.
        if lambdas is not None and self.is_active(global_step + 1, max_steps):
            sizes = lambdas if mus is None else {m: list(map(max, lambdas[m], mus[m])) for m in self.modalities}
            self.masks, self._masked_units = self._build_masks(sizes)
            dominant = dominant_modalities(lambdas, self.config.min_lambda)
            self.aux_detached = dominant if self.masks and self.config.aux_trains == "weak_only" else []
        else:
            self.masks, self._masked_units, self.aux_detached = {}, {}, []

        metrics["aim/active"] = float(self.is_active(global_step, max_steps))
        no_strength = {m: [0.0] * len(self.units[m]) for m in self.modalities}
        for m in self.modalities:
            if self.scores is not None:
                for d, s in enumerate(self.scores[m].tolist()):
                    metrics[f"aim/score/{m}/depth_{d}"] = s
            for d, lam in enumerate((lambdas or no_strength)[m]):
                metrics[f"aim/lambda/{m}/depth_{d}"] = lam
            if self.config.pam == "symmetric":
                for d, mu in enumerate((mus or no_strength)[m]):
                    metrics[f"aim/mu/{m}/depth_{d}"] = mu
            # max(..., 1): a frozen encoder has no units.
            metrics[f"aim/masked_fraction/{m}"] = used_counts.get(m, 0) / max(self.num_units[m], 1)
        if aux_n > 0:
            metrics["aim/aux_loss"] = aux_sum / aux_n
        if self.prototype_loss is not None:
            metrics["aim/prototype_loss"] = self.prototype_loss
        ctx.log(metrics)

    def _unpack(self, totals: torch.Tensor):
        """Split the reduced buffer (layout in `_accumulate`)."""
        k = self.num_labels
        class_sums, feature_sums, score_sums, offset = {}, {}, {}, 0
        for m in self.modalities:
            class_sums[m], feature_sums[m], scores = [], [], []
            for dim in self._dims[m]:
                width = 0 if self.learned else k * dim
                class_sums[m].append(totals[offset : offset + width].view(-1, dim))
                offset += width
                if self.config.center:
                    feature_sums[m].append(totals[offset : offset + dim])
                    offset += dim
                scores.append(totals[offset])
                offset += 1
            score_sums[m] = torch.stack(scores)
        counts = totals[offset : offset + k]
        n, aux_sum, aux_n = totals[offset + k :].tolist()
        return class_sums, feature_sums, score_sums, counts, n, aux_sum, aux_n

    # ------------------------------------------------------------------------ learned prototypes
    def _prototype_inputs(self, modality: str) -> dict[str, Any]:
        return prototype_inputs(self._templates[modality], self.num_labels, self.config.prototype_tokens)

    def _prototype_loss(
        self, model: MultimodalModel, prototypes: dict[str, list[torch.Tensor]], inputs: dict[str, dict[str, Any]]
    ) -> torch.Tensor:
        return prototype_loss(model, prototypes, inputs, {m: dims[-1] for m, dims in self._dims.items()})

    def _refresh_prototypes(self, model: MultimodalModel, seed: int) -> float:
        """Refresh the learned prototypes (`refresh_learned`); returns the mean loss of the last iteration."""
        inputs = {m: self._prototype_inputs(m) for m in self.modalities}
        feature_dims = {m: dims[-1] for m, dims in self._dims.items()}
        prototypes, loss = refresh_learned(model, self.prototypes, inputs, feature_dims, self.config, seed)
        self._set_learned(prototypes, model)
        return loss

    def _set_learned(self, prototypes: dict[str, list[torch.Tensor]], model: MultimodalModel) -> None:
        self.prototypes = prototypes
        self._pooled = pooled_prototypes(model, prototypes)
        self._ready = True

    # ------------------------------------------------------------------------------------- PAM
    def _build_masks(
        self, strengths: dict[str, list[float]]
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int]]:
        """The Auxiliary Blocks' masks for `strengths` (`build_masks`) and the units they switch off per
        modality."""
        return build_masks(self.units, self.importance, strengths, self.config.r_max, self.config.min_lambda)

    # ------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        state = {
            "prototype_kind": self.config.prototypes,
            "prototypes": self.prototypes,
            "class_seen": self.class_seen,
            "scores": self.scores,
            "centers": self.centers,
            "importance": self.importance,
            "masks": self.masks,
            "aux_detached": list(self.aux_detached),
            "prototype_loss": self.prototype_loss,
        }
        return _map_tensors(state, lambda t: t.detach().cpu().clone())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("prototype_kind", "class_mean")  # checkpoints before learned prototypes
        if kind != self.config.prototypes:
            raise ValueError(
                f"the checkpoint's AIM state has prototypes={kind!r} but this run uses "
                f"{self.config.prototypes!r}; resume with the same setting or start a new output_dir."
            )
        device = self.model.device
        prototypes = _map_tensors(state["prototypes"], lambda t: t.to(device))
        if self.learned and prototypes is not None:
            self._set_learned(prototypes, self.model)
        else:
            self.prototypes = prototypes
            self.class_seen = _map_tensors(state["class_seen"], lambda t: t.to(device))
            self._ready = self.class_seen is not None and bool(self.class_seen.all())
        self.scores = _map_tensors(state["scores"], lambda t: t.to(device))
        self.centers = _map_tensors(state.get("centers"), lambda t: t.to(device))
        # Importance and masks live beside their layer's weight.
        layers = {m: {name: mod for group in groups for name, mod in group.items()} for m, groups in self.units.items()}
        self.importance = {
            m: {name: v.to(layers[m][name].weight.device) for name, v in state["importance"].get(m, {}).items()}
            for m in self.modalities
        }
        self.masks = {
            m: {name: v.to(layers[m][name].weight.device) for name, v in masks.items()}
            for m, masks in state["masks"].items()
        }
        self.aux_detached = list(state.get("aux_detached", []))
        self.prototype_loss = state.get("prototype_loss")
        self._masked_units = {
            m: int(sum((mask == 0).sum() for mask in masks.values())) for m, masks in self.masks.items()
        }


def _map_tensors(value: Any, fn) -> Any:
    """`fn` applied to every tensor inside nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    return value
