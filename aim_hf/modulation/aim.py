"""AIM: adaptive intra-network modulation (Shen, Chen, Zhang, arXiv 2508.19769), as `AIM_SPEC.md`
(with its 2026-12 update) and docs/method.md read it.

- DAP: per modality and depth group, class prototypes and a depth score, the mean true-class
  probability of a softmax over the cosine similarities of the pooled group output to the pooled
  prototypes (temperature `tau`), smoothed by an EMA. `aim_prototypes="learned"`: per class a tensor
  in the depth's output space, optimised (model frozen) so that the rest of the modality's encoder
  and its share of the classifier decode it as its class, refreshed every `aim_prototype_every`
  steps. `"class_mean"`: the EMA of the class means of the L2-normalised pooled outputs.
- DAM: per depth, `lambda^m_d = tanh(alpha * (s^m_d / min_m' s^m'_d - 1))`: the weakest modality at a
  depth gets 0, stronger ones more; `aim_dam_cap` [ours] can bound it by the weakest modality's
  capacity `c^m_d = clip((s_min - 1/K) / (s^m_d - 1/K), 0, 1)` (how much of m's above-chance score
  the weakest reaches there: near 0 where the weak modality decodes next to nothing); with
  `aim_pam="symmetric"` the weaker ones also get `mu^m_d = tanh(alpha * (1 - s^m_d / max_m' s^m'_d))`.
- PAM: per Linear/Conv output unit inside each depth group, a Taylor importance
  `EMA(sum_j |W_uj g_uj| + |b_u g_bu|)`. The Auxiliary Block of group d of modality m switches off
  the `ceil(strength * r_max * n)` most (or, `aim_mask_by="low"`, least) important units of each of
  its layers; the model runs the masked encoders again (from their first masked group) and fuses
  them with the other modalities' normal features; the auxiliary loss trains the real units.

Timing within an optimizer step: `compute_loss` accumulates statistics over the micro-batches;
`step` reduces them across processes in one buffer, updates the state (and every
`aim_prototype_every` steps the learned prototypes, broadcast from process 0), and computes the
masks the *next* step uses (so every micro-batch of a step uses the same masks). Everything that
decides a mask is a reduced value, an all-reduced gradient or a broadcast tensor, hence identical
on every process.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..modeling import MultimodalModel, MultimodalOutput
from .base import Metric, Modulation, Option, Paper, Summary
from .mechanics import StepSums


AIM_CHOICES: dict[str, tuple[str, ...]] = {
    "aim_prototypes": ("learned", "class_mean"),
    "aim_pam": ("dominant", "symmetric"),
    "aim_aux_trains": ("all", "no_head", "weak_only"),
    "aim_aux_mode": ("add", "replace"),
    "aim_mask_by": ("high", "low"),
    "aim_dam_cap": ("none", "min", "product"),
}


def _per_depth(scores: dict[str, torch.Tensor], strength: Any) -> dict[str, list[float]]:
    """`strength(s, weakest, strongest)` per modality and depth over the modalities that have that
    depth (a depth only one modality has gets 0)."""
    values = {m: s.tolist() for m, s in scores.items()}
    strengths = {m: [0.0] * len(v) for m, v in values.items()}
    for d in range(max(len(v) for v in values.values())):
        at_depth = {m: v[d] for m, v in values.items() if d < len(v)}
        if len(at_depth) < 2:
            continue
        weakest, strongest = max(min(at_depth.values()), 1e-12), max(max(at_depth.values()), 1e-12)
        for m, s in at_depth.items():
            strengths[m][d] = strength(s, weakest, strongest)
    return strengths


def dam_strengths(scores: dict[str, torch.Tensor], alpha: float) -> dict[str, list[float]]:
    """DAM: per modality and depth, `tanh(alpha * (rho - 1))` with `rho = s / min` over the
    modalities that have that depth (a depth only one modality has gets 0)."""
    return _per_depth(scores, lambda s, weakest, strongest: math.tanh(alpha * (s / weakest - 1.0)))


def weak_capacities(scores: dict[str, torch.Tensor], chance: float) -> dict[str, list[float]]:
    """Per modality and depth, the share of its depth score above chance that the weakest modality
    there reaches: `clip((s_min - chance) / (s - chance), 0, 1)` (0 where `s` is not above chance).
    1 for the weakest; near 0 where the weakest decodes next to nothing."""

    def capacity(s: float, weakest: float, strongest: float) -> float:
        gain = s - chance
        return 0.0 if gain <= 0 else min(max((weakest - chance) / gain, 0.0), 1.0)

    return _per_depth(scores, capacity)


def capped_strengths(
    lambdas: dict[str, list[float]], capacities: dict[str, list[float]], cap: str
) -> dict[str, list[float]]:
    """DAM's strengths bounded by the weakest modality's capacity (`aim_dam_cap`): `"min"`:
    `min(lambda, c)`; `"product"`: `lambda * c`; `"none"`: lambda as is."""
    if cap == "none":
        return lambdas
    bound = min if cap == "min" else (lambda lam, c: lam * c)
    return {m: [bound(lam, c) for lam, c in zip(lambdas[m], capacities[m])] for m in lambdas}


def weak_strengths(scores: dict[str, torch.Tensor], alpha: float) -> dict[str, list[float]]:
    """Symmetric PAM: per modality and depth, `tanh(alpha * (1 - s / max))`: 0 for the strongest
    modality at a depth, more for weaker ones (never more than the strongest's lambda there)."""
    return _per_depth(scores, lambda s, weakest, strongest: math.tanh(alpha * (1.0 - s / strongest)))


def unit_importances(modules: list[nn.Module]) -> list[torch.Tensor]:
    """Per output unit of each module, `sum_j |W_uj * dL/dW_uj| + |b_u * dL/db_u|` (float32) from the
    current gradients (each weight must have one). Batched with `torch._foreach_*`: one call per
    operation instead of one per layer, which is most of the cost at small widths."""
    weights = [module.weight.detach().float() for module in modules]  # no copy when already float32
    products = torch._foreach_mul(weights, [module.weight.grad.float() for module in modules])
    torch._foreach_abs_(products)
    values = [product.flatten(1).sum(1) for product in products]
    with_bias = [i for i, module in enumerate(modules) if module.bias is not None and module.bias.grad is not None]
    if with_bias:
        biases = [modules[i].bias for i in with_bias]
        bias_terms = torch._foreach_mul([b.detach().float() for b in biases], [b.grad.float() for b in biases])
        torch._foreach_abs_(bias_terms)
        torch._foreach_add_([values[i] for i in with_bias], bias_terms)
    return values


def top_unit_masks(importances: list[torch.Tensor], num_off: list[int]) -> list[torch.Tensor]:
    """0/1 masks that switch off the `num_off[i]` most important units of `importances[i]` (ties
    broken by index). Layers with the same number of units on the same device are ranked together."""
    masks: list[torch.Tensor | None] = [None] * len(importances)
    buckets: dict[tuple[int, torch.device], list[int]] = {}
    for i, importance in enumerate(importances):
        buckets.setdefault((importance.numel(), importance.device), []).append(i)
    for (width, device), rows in buckets.items():
        stacked = torch.stack([importances[i] for i in rows])
        order = stacked.argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(width, device=device).expand_as(order))
        limits = torch.tensor([num_off[i] for i in rows], device=device)[:, None]
        for i, mask in zip(rows, (ranks >= limits).to(stacked.dtype).unbind(0)):
            masks[i] = mask
    return masks


class AIM(Modulation):
    """AIM with DAP, DAM and PAM (Auxiliary Blocks); hyperparameters `args.aim_*` (see `AIMConfig`);
    the metrics it logs per optimizer step: `metrics`."""

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
        Metric("aim/mu/<m>/depth_<d>", "the weak-side strength (aim_pam='symmetric')"),
        Metric("aim/masked_fraction/<m>", "the share of m's units switched off in this step's auxiliary pass"),
        Metric("aim/aux_loss", "the auxiliary loss (steps with an auxiliary pass)"),
        Metric(
            "aim/prototype_loss",
            "learned prototypes: their mean cross-entropy at the last iteration of the latest refresh",
        ),
    )
    summary = Summary("aim/lambda", "max", "λ")
    default_start = 0.1
    reads_gradients = True
    forward_arguments = ("unit_masks", "auxiliary_head_grad", "auxiliary_detach")

    @classmethod
    def options(cls) -> list[Option]:
        """AIM's options: the `aim_*` fields of `AIMConfig`, each given as its own flag (they are not
        `modulation_kwargs` keys yet)."""
        from ..training_args import AIMConfig  # it imports the registry, which imports this module

        return [
            Option(f.name, str(f.type), f.default, f.metadata["help"], flag=f"--{f.name}")
            for f in dataclasses.fields(AIMConfig)
            if f.name.startswith("aim_")
        ]

    def __init__(self, model: MultimodalModel, args: Any) -> None:
        super().__init__(model, args)
        self.num_labels = model.config.num_labels
        self.learned = args.aim_prototypes == "learned"
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
        # PAM state: importance EMA per unit module, the masks of the next step's Auxiliary Blocks,
        # and the modalities whose features the next auxiliary fusion detaches (`weak_only`).
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

    def _template_hook(self, modality: str) -> Any:
        """A forward pre-hook that records one example of `modality`'s encoder inputs, then removes itself."""

        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            self._templates[modality] = {
                k: v[:1].detach() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
            }
            self._template_hooks.pop(modality).remove()

        return hook

    # ------------------------------------------------------------------------------ micro-batch
    def forward_kwargs(self) -> dict[str, Any]:
        if not self.masks:
            return {}
        kwargs: dict[str, Any] = {"unit_masks": self.masks}
        if self.args.aim_aux_trains != "all":
            kwargs["auxiliary_head_grad"] = False
        if self.aux_detached:
            kwargs["auxiliary_detach"] = self.aux_detached
        return kwargs

    def compute_loss(self, outputs: MultimodalOutput, labels: torch.Tensor) -> torch.Tensor | None:
        aux_loss = None
        if outputs.auxiliary_logits is not None:
            aux_loss = F.cross_entropy(outputs.auxiliary_logits.float(), labels)
        with torch.no_grad():
            self._accumulate(outputs.depth_features, labels, aux_loss)
        if aux_loss is None:
            return None
        if self.args.aim_aux_mode == "replace":
            # The model's loss holds CE(z, y) once: subtracting the same node makes its gradient
            # exactly 0 (1 - 1 at that node), so the joint term is trained on z_aux instead.
            return aux_loss - outputs.fused_loss
        return self.args.aim_beta_aux * aux_loss

    def _accumulate(
        self, depth_features: dict[str, tuple[torch.Tensor, ...]], labels: torch.Tensor, aux_loss: torch.Tensor | None
    ) -> None:
        """Add the micro-batch's class sums of normalised features (class_mean only), true-class
        prototype probabilities (once the depths can be scored), class counts, sample count and
        auxiliary loss to the step's buffer. Layout: per modality and depth [K*dim sums, score sum],
        then [K counts, n, aux loss sum, aux n]."""
        if self._dims is None:
            self._dims = {m: [f.shape[-1] for f in depth_features[m]] for m in self.modalities}
        onehot = F.one_hot(labels, self.num_labels).float()
        parts = []
        for m in self.modalities:
            for d, feature in enumerate(depth_features[m]):
                h = F.normalize(feature.detach().float(), dim=-1)
                if not self.learned:
                    parts.append((onehot.T @ h).flatten())
                score = torch.zeros(1, device=h.device)
                if self._ready:
                    reference = self._pooled[m][d] if self.learned else self.prototypes[m][d]
                    probs = (h @ F.normalize(reference, dim=-1).T / self.args.aim_tau).softmax(-1)
                    score = probs.gather(1, labels[:, None]).sum().view(1)
                parts.append(score)
        n = float(labels.shape[0])
        tail = torch.tensor([n, 0.0, 0.0], device=labels.device)
        if aux_loss is not None:
            tail[1], tail[2] = aux_loss.detach() * n, n
        parts += [onehot.sum(0), tail]
        self._sums.add(torch.cat(parts))

    # ---------------------------------------------------------------------------- optimizer step
    def step(
        self, model: MultimodalModel, global_step: int, max_steps: int, grad_scale: float | None = None
    ) -> dict[str, float]:
        totals = self._sums.reduce_unless_skipped(model, grad_scale)
        if totals is None:  # nothing added, or a step the GradScaler skips: AIM's state skips it too
            return {}
        class_sums, score_sums, counts, n, aux_sum, aux_n = self._unpack(totals)
        metrics: dict[str, float] = {}
        if self._ready:
            self._update_scores({m: s / n for m, s in score_sums.items()})
        if not self.learned:
            self._update_prototypes(class_sums, counts)
        elif global_step % self.args.aim_prototype_every == 0 and len(self._templates) == len(self.modalities):
            started = time.perf_counter()
            self.prototype_loss = self._refresh_prototypes(model)
            self.refresh_seconds += time.perf_counter() - started
        self._update_importance(grad_scale or 1.0)

        used_counts = self._masked_units
        lambdas = None
        if self.scores is not None:
            lambdas = capped_strengths(
                dam_strengths(self.scores, self.args.aim_alpha),
                weak_capacities(self.scores, 1.0 / self.num_labels),
                self.args.aim_dam_cap,
            )
        mus = (
            weak_strengths(self.scores, self.args.aim_alpha)
            if lambdas is not None and self.args.aim_pam == "symmetric"
            else None
        )
        # The masks of the next step's Auxiliary Blocks, if that step is inside the modulation window.
        if lambdas is not None and self.is_active(global_step + 1, max_steps):
            sizes = lambdas if mus is None else {m: list(map(max, lambdas[m], mus[m])) for m in self.modalities}
            self.masks, self._masked_units = self._build_masks(sizes)
            dominant = [m for m in self.modalities if max(lambdas[m]) > self.args.aim_min_lambda]
            self.aux_detached = dominant if self.masks and self.args.aim_aux_trains == "weak_only" else []
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
            if self.args.aim_pam == "symmetric":
                for d, mu in enumerate((mus or no_strength)[m]):
                    metrics[f"aim/mu/{m}/depth_{d}"] = mu
            metrics[f"aim/masked_fraction/{m}"] = used_counts.get(m, 0) / max(self.num_units[m], 1)  # a frozen encoder has none
        if aux_n > 0:
            metrics["aim/aux_loss"] = aux_sum / aux_n
        if self.prototype_loss is not None:
            metrics["aim/prototype_loss"] = self.prototype_loss
        return metrics

    def _unpack(self, totals: torch.Tensor):
        """Split the reduced buffer (layout in `_accumulate`)."""
        k = self.num_labels
        class_sums, score_sums, offset = {}, {}, 0
        for m in self.modalities:
            class_sums[m], scores = [], []
            for dim in self._dims[m]:
                width = 0 if self.learned else k * dim
                class_sums[m].append(totals[offset : offset + width].view(-1, dim))
                scores.append(totals[offset + width])
                offset += width + 1
            score_sums[m] = torch.stack(scores)
        counts = totals[offset : offset + k]
        n, aux_sum, aux_n = totals[offset + k :].tolist()
        return class_sums, score_sums, counts, n, aux_sum, aux_n

    def _update_scores(self, batch_scores: dict[str, torch.Tensor]) -> None:
        mom = self.args.aim_momentum
        if self.scores is None:
            self.scores = {m: s.clone() for m, s in batch_scores.items()}
        else:
            self.scores = {m: mom * self.scores[m] + (1 - mom) * s for m, s in batch_scores.items()}

    def _update_prototypes(self, class_sums: dict[str, list[torch.Tensor]], counts: torch.Tensor) -> None:
        """class_mean: EMA of the class means for the classes in the step; a class's first mean is
        taken as is."""
        mom = self.args.aim_momentum
        present = counts > 0
        seen = self.class_seen if self.class_seen is not None else torch.zeros_like(present)
        if self.prototypes is None:
            self.prototypes = {m: [torch.zeros_like(s) for s in sums] for m, sums in class_sums.items()}
        for m, sums in class_sums.items():
            for d, s in enumerate(sums):
                mean = s / counts.clamp(min=1)[:, None]
                old = self.prototypes[m][d]
                ema = torch.where(seen[:, None], mom * old + (1 - mom) * mean, mean)
                self.prototypes[m][d] = torch.where(present[:, None], ema, old)
        self.class_seen = seen | present
        self._ready = bool(self.class_seen.all())

    # ------------------------------------------------------------------------ learned prototypes
    def _prototype_inputs(self, modality: str) -> dict[str, Any]:
        """Inputs for an encoder call on a batch of `num_labels` prototypes. Their values never reach
        the prototypes' path (the layers up to the prototype's depth are replayed), so zeros of the
        recorded shapes do; token ids get the prototype's length, and no attention mask: every
        prototype token is real. Data-independent, hence the same on every process."""
        k, tokens = self.num_labels, self.args.aim_prototype_tokens
        inputs = {}
        for key, value in self._templates[modality].items():
            if not isinstance(value, torch.Tensor):
                inputs[key] = value
            elif key != "attention_mask":
                integer_2d = value.dim() == 2 and not value.is_floating_point()
                inputs[key] = value.new_zeros((k, tokens) if integer_2d else (k, *value.shape[1:]))
        return inputs

    def _init_prototypes(
        self, model: MultimodalModel, inputs: dict[str, dict[str, Any]]
    ) -> dict[str, list[torch.Tensor]]:
        """Standard-normal prototypes, one per class, shaped by `_prototype_shape`, drawn from a
        generator seeded with `args.seed`."""
        generator = torch.Generator().manual_seed(self.args.seed)
        prototypes = {}
        for m in self.modalities:
            with torch.no_grad():
                outputs = model.depth_outputs(m, inputs[m])
            shapes = [self._prototype_shape(model, m, d, output, inputs[m]) for d, output in enumerate(outputs)]
            prototypes[m] = [
                torch.randn(shape, generator=generator).to(output.device) for shape, output in zip(shapes, outputs)
            ]
        return prototypes

    def _prototype_shape(
        self, model: MultimodalModel, modality: str, depth: int, output: torch.Tensor, inputs: dict[str, Any]
    ) -> tuple[int, ...]:
        """The shape of `depth`'s prototypes: its output's (`num_labels` of them) with the token axis
        cut to `aim_prototype_tokens` (a conv stage: a square map of that side), unless the rest of
        the encoder cannot decode that (layers sized by the inputs' length or grid, as WavLM's
        position bias or Swin's windows; unpadded strided convolutions, as EfficientNet's, that a
        small map runs out of): then uncut."""
        shape, t = tuple(output.shape), self.args.aim_prototype_tokens
        cut = (shape[0], shape[1], t, t) if len(shape) == 4 else (shape[0], t, shape[2]) if len(shape) == 3 else shape
        try:
            with torch.no_grad():
                model.encode_from_depth(modality, depth, output.new_zeros(cut), inputs)
        except RuntimeError:
            return shape
        return cut

    def _prototype_loss(
        self, model: MultimodalModel, prototypes: dict[str, list[torch.Tensor]], inputs: dict[str, dict[str, Any]]
    ) -> torch.Tensor:
        """Sum over modalities and depths of the cross-entropy of each prototype's class when decoded
        by the rest of its encoder and its share of the fusion, the other modalities' features zero."""
        targets = torch.arange(self.num_labels, device=model.device)
        total = torch.zeros((), device=model.device)
        for m, per_depth in prototypes.items():
            dtype = next(model.encoders[m].parameters()).dtype
            for d, prototype in enumerate(per_depth):
                feature = model.encode_from_depth(m, d, prototype.to(dtype), inputs[m])
                features = {o: feature.new_zeros(feature.shape[0], self._dims[o][-1]) for o in self.modalities}
                features[m] = feature
                _, shares = model.fusion(features)
                total = total + F.cross_entropy(shares[m].float(), targets)
        return total

    def _refresh_prototypes(self, model: MultimodalModel) -> float:
        """A few Adam iterations on the prototypes (warm-started; the first refresh draws them), the
        model frozen: in eval mode (no dropout draw, no batch-norm statistics update) and with
        `torch.autograd.grad` taken w.r.t. the prototypes only (no parameter's `.grad` is touched).
        Every process computes the same from the same weights; process 0's result is broadcast so
        that nondeterministic kernels cannot make them differ. Returns the mean loss of the last
        iteration."""
        inputs = {m: self._prototype_inputs(m) for m in self.modalities}
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            if self.prototypes is None:
                self.prototypes = self._init_prototypes(model, inputs)
            leaves = {m: [p.detach().clone().requires_grad_(True) for p in ps] for m, ps in self.prototypes.items()}
            flat = [p for ps in leaves.values() for p in ps]
            optimizer = torch.optim.Adam(flat, lr=self.args.aim_prototype_lr)
            loss = torch.zeros(())
            for _ in range(self.args.aim_prototype_iters):
                loss = self._prototype_loss(model, leaves, inputs)
                for p, grad in zip(flat, torch.autograd.grad(loss, flat)):
                    p.grad = grad
                optimizer.step()
        finally:
            for module, mode in modes:
                module.training = mode
        _broadcast_from_first(flat)
        self._set_learned({m: [p.detach() for p in ps] for m, ps in leaves.items()}, model)
        return loss.item() / len(flat)

    def _set_learned(self, prototypes: dict[str, list[torch.Tensor]], model: MultimodalModel) -> None:
        self.prototypes = prototypes
        self._pooled = {m: [model._pool(m, p.float(), {}) for p in ps] for m, ps in prototypes.items()}
        self._ready = True

    # ------------------------------------------------------------------------------------- PAM
    @torch.no_grad()
    def _update_importance(self, grad_scale: float) -> None:
        """Taylor importance EMA of every unit from the step's final (finite) gradients, unscaled."""
        live = [(m, name, module) for m, name, module in self._unit_list if module.weight.grad is not None]
        if not live:
            return
        fresh = unit_importances([module for _, _, module in live])
        if grad_scale != 1.0:
            torch._foreach_div_(fresh, grad_scale)
        mom = self.args.aim_momentum
        old = [self.importance[m].get(name) for m, name, _ in live]
        known = [i for i, value in enumerate(old) if value is not None]
        if known:
            torch._foreach_mul_([old[i] for i in known], mom)
            torch._foreach_add_([old[i] for i in known], [fresh[i] for i in known], alpha=1 - mom)
        for (m, name, _), value, previous in zip(live, fresh, old):
            if previous is None:
                self.importance[m][name] = value

    def _build_masks(
        self, strengths: dict[str, list[float]]
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int]]:
        """Auxiliary Blocks: in every group with strength > `aim_min_lambda` (0: the spec), switch off
        `ceil(strength * r_max * n)` of each layer's `n` units: the most important ones
        (`aim_mask_by="high"`) or the least (`"low"`); layers without an importance estimate stay
        whole. Returns the masks and the units switched off per modality."""
        sign = 1.0 if self.args.aim_mask_by == "high" else -1.0
        keys, importances, num_off = [], [], []
        for m, groups in self.units.items():
            for d, group in enumerate(groups):
                if strengths[m][d] <= self.args.aim_min_lambda:
                    continue
                fraction = strengths[m][d] * self.args.aim_r_max
                for name in group:
                    importance = self.importance[m].get(name)
                    if importance is None:
                        continue
                    count = min(math.ceil(fraction * importance.numel()), importance.numel())
                    if count > 0:
                        keys.append((m, name))
                        importances.append(importance if sign > 0 else -importance)
                        num_off.append(count)
        masks: dict[str, dict[str, torch.Tensor]] = {}
        for (m, name), mask in zip(keys, top_unit_masks(importances, num_off)):
            masks.setdefault(m, {})[name] = mask
        counts = {m: sum(c for (m2, _), c in zip(keys, num_off) if m2 == m) for m in self.modalities}
        return masks, counts

    # ------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        state = {
            "prototype_kind": self.args.aim_prototypes,
            "prototypes": self.prototypes,
            "class_seen": self.class_seen,
            "scores": self.scores,
            "importance": self.importance,
            "masks": self.masks,
            "aux_detached": list(self.aux_detached),
            "prototype_loss": self.prototype_loss,
        }
        return _map_tensors(state, lambda t: t.detach().cpu().clone())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("prototype_kind", "class_mean")  # checkpoints before learned prototypes
        if kind != self.args.aim_prototypes:
            raise ValueError(
                f"the checkpoint's AIM state has aim_prototypes={kind!r} but this run uses "
                f"{self.args.aim_prototypes!r}; resume with the same setting or start a new output_dir."
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


def _broadcast_from_first(tensors: list[torch.Tensor]) -> None:
    """Overwrite `tensors` in place with process 0's values (a no-op on one process), in one call."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    flat = torch.cat([t.detach().flatten() for t in tensors])
    dist.broadcast(flat, src=0)
    with torch.no_grad():
        for t, value in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(value.view_as(t))


def _map_tensors(value: Any, fn) -> Any:
    """`fn` applied to every tensor inside nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    return value
