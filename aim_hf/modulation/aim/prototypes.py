"""DAP's class prototypes, per modality and depth group, against which `strengths` scores a depth.

- Learned (`prototypes="learned"`): per class a tensor in the depth's output space, optimised with
  the model frozen so that the rest of the modality's encoder and its share of the fusion decode it
  as its class; refreshed every `prototype_every` steps by a few warm-started Adam iterations.
  Every process computes the same from the same weights and data-independent inputs; process 0's
  result is then broadcast, so that nondeterministic kernels cannot make them differ.
- Class means (`prototypes="class_mean"`): the EMA of the class means of the L2-normalised pooled
  depth outputs over each step's global batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ...modeling import MultimodalModel
from .auxiliary import encode_from_depth
from .options import AIMOptions


def prototype_inputs(template: dict[str, Any], num_labels: int, tokens: int) -> dict[str, Any]:
    """Inputs for an encoder call on a batch of `num_labels` prototypes, from `template` (one
    recorded example of the encoder's inputs). Their values never reach the prototypes' path (the
    layers up to the prototype's depth are replayed), so zeros of the recorded shapes do; token ids
    get the prototype's length (`tokens`), and no attention mask: every prototype token is real.
    Data-independent, hence the same on every process."""
    inputs = {}
    for key, value in template.items():
        if not isinstance(value, torch.Tensor):
            inputs[key] = value
        elif key != "attention_mask":
            integer_2d = value.dim() == 2 and not value.is_floating_point()
            inputs[key] = value.new_zeros((num_labels, tokens) if integer_2d else (num_labels, *value.shape[1:]))
    return inputs


def prototype_shape(
    model: MultimodalModel, modality: str, depth: int, output: torch.Tensor, inputs: dict[str, Any], tokens: int
) -> tuple[int, ...]:
    """The shape of `depth`'s prototypes: its output's (one per class) with the token axis cut to
    `tokens` (a conv stage: a square map of that side), unless the rest of the encoder cannot decode
    that (layers sized by the inputs' length or grid, as WavLM's position bias or Swin's windows;
    unpadded strided convolutions, as EfficientNet's, that a small map runs out of): then uncut."""
    shape, t = tuple(output.shape), tokens
    cut = (shape[0], shape[1], t, t) if len(shape) == 4 else (shape[0], t, shape[2]) if len(shape) == 3 else shape
    try:
        with torch.no_grad():
            encode_from_depth(model, modality, depth, output.new_zeros(cut), inputs)
    except RuntimeError:
        return shape
    return cut


def initial_prototypes(
    model: MultimodalModel, inputs: dict[str, dict[str, Any]], tokens: int, seed: int
) -> dict[str, list[torch.Tensor]]:
    """Standard-normal prototypes for each modality of `inputs` and each depth, shaped by
    `prototype_shape`, drawn from a generator seeded with `seed` (the global RNG is not touched)."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = {}
    for m, modality_inputs in inputs.items():
        with torch.no_grad():
            outputs = model.depth_outputs(m, modality_inputs)
        shapes = [prototype_shape(model, m, d, output, modality_inputs, tokens) for d, output in enumerate(outputs)]
        prototypes[m] = [
            torch.randn(shape, generator=generator).to(output.device) for shape, output in zip(shapes, outputs)
        ]
    return prototypes


def prototype_loss(
    model: MultimodalModel,
    prototypes: dict[str, list[torch.Tensor]],
    inputs: dict[str, dict[str, Any]],
    feature_dims: dict[str, int],
) -> torch.Tensor:
    """Sum over modalities and depths of the cross-entropy of each prototype's class when decoded by
    the rest of its encoder and its share of the fusion, the other modalities' features zero (of
    their final widths, `feature_dims`)."""
    targets = torch.arange(model.config.num_labels, device=model.device)
    total = torch.zeros((), device=model.device)
    for m, per_depth in prototypes.items():
        dtype = next(model.encoders[m].parameters()).dtype
        for d, prototype in enumerate(per_depth):
            feature = encode_from_depth(model, m, d, prototype.to(dtype), inputs[m])
            features = {o: feature.new_zeros(feature.shape[0], feature_dims[o]) for o in model.modalities}
            features[m] = feature
            _, shares = model.fusion(features)
            total = total + F.cross_entropy(shares[m].float(), targets)
    return total


def refresh_learned(
    model: MultimodalModel,
    prototypes: dict[str, list[torch.Tensor]] | None,
    inputs: dict[str, dict[str, Any]],
    feature_dims: dict[str, int],
    options: AIMOptions,
    seed: int,
) -> tuple[dict[str, list[torch.Tensor]], float]:
    """`options.prototype_iters` Adam iterations on the prototypes (warm-started; None: the first
    refresh draws them, `initial_prototypes`), the model frozen: in eval mode (no dropout draw, no
    batch-norm statistics update) and with `torch.autograd.grad` taken w.r.t. the prototypes only (no
    parameter's `.grad` is touched). Returns the new prototypes (process 0's on every process) and
    the mean loss per prototype tensor of the last iteration."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        if prototypes is None:
            prototypes = initial_prototypes(model, inputs, options.prototype_tokens, seed)
        leaves = {m: [p.detach().clone().requires_grad_(True) for p in ps] for m, ps in prototypes.items()}
        flat = [p for ps in leaves.values() for p in ps]
        optimizer = torch.optim.Adam(flat, lr=options.prototype_lr)
        loss = torch.zeros(())
        for _ in range(options.prototype_iters):
            loss = prototype_loss(model, leaves, inputs, feature_dims)
            for p, grad in zip(flat, torch.autograd.grad(loss, flat)):
                p.grad = grad
            optimizer.step()
    finally:
        for module, mode in modes:
            module.training = mode
    broadcast_from_first(flat)
    return {m: [p.detach() for p in ps] for m, ps in leaves.items()}, loss.item() / len(flat)


def pooled_prototypes(
    model: MultimodalModel, prototypes: dict[str, list[torch.Tensor]]
) -> dict[str, list[torch.Tensor]]:
    """Learned prototypes pooled as the model pools a depth's output (classes x dim): what a depth is
    scored against."""
    return {m: [model.pool(m, p.float(), {}) for p in ps] for m, ps in prototypes.items()}


def class_mean_update(
    prototypes: dict[str, list[torch.Tensor]] | None,
    class_seen: torch.Tensor | None,
    class_sums: dict[str, list[torch.Tensor]],
    counts: torch.Tensor,
    momentum: float,
) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor]:
    """Class means: the EMA of the class means for the classes in the step (`class_sums` of the
    normalised pooled outputs, `counts` per class); a class's first mean is taken as is. Returns the
    prototypes and which classes have one."""
    present = counts > 0
    seen = class_seen if class_seen is not None else torch.zeros_like(present)
    if prototypes is None:
        prototypes = {m: [torch.zeros_like(s) for s in sums] for m, sums in class_sums.items()}
    for m, sums in class_sums.items():
        for d, s in enumerate(sums):
            mean = s / counts.clamp(min=1)[:, None]
            old = prototypes[m][d]
            ema = torch.where(seen[:, None], momentum * old + (1 - momentum) * mean, mean)
            prototypes[m][d] = torch.where(present[:, None], ema, old)
    return prototypes, seen | present


def broadcast_from_first(tensors: list[torch.Tensor]) -> None:
    """Overwrite `tensors` in place with process 0's values (a no-op on one process), in one call."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    flat = torch.cat([t.detach().flatten() for t in tensors])
    dist.broadcast(flat, src=0)
    with torch.no_grad():
        for t, value in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(value.view_as(t))

