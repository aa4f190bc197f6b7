"""AIM's own passes through the model's encoders, built on the model's depth discovery
(`depth_layers`, `depth_groups`, `unit_modules`, `pool`) so that the model itself carries none of it:

- the Auxiliary Blocks' pass (`auxiliary_logits`): the encoders of the masked modalities rerun with
  chosen output units switched off, from their first masked depth group (the layers before it
  replay the normal pass's output, recorded by `GroupOutputs`), fused with the other modalities'
  normal features;
- decoding from a depth (`encode_from_depth`): the layers after a depth group run on a given
  output of that group (learned prototypes).

Under gradient checkpointing the backward pass recomputes a checkpointed layer after the pass has
ended: `_Alteration` puts its unit masks and replayed layers back around that recompute, else the
masked layers would be recomputed unmasked (wrong gradients, no error). Inside the pass (and that
recompute) the encoder's BatchNorm layers normalise with the batch's statistics as in the training
forward, but do not fold the masked activations into the running statistics the model is evaluated
with: a pretrained CNN such as MobileNetV2 otherwise evaluates with the statistics of a network
with its most important units switched off (on `emoji` its probe fell to chance).
"""

from __future__ import annotations

import types
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any, Callable
from weakref import WeakKeyDictionary

import torch
from torch import nn

from ...modeling import MultimodalModel, hidden_state


def _unit_mask_hook(mask: torch.Tensor) -> Callable:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        shape = (-1,) if isinstance(module, nn.Linear) else (-1,) + (1,) * (output.dim() - 2)
        return output * mask.to(output.dtype).view(shape)

    return hook


class GroupOutputs:
    """Records the raw output of every depth group's last layer of some modalities' encoders while
    inside `recording()`: `outputs[m][g]` (a tensor, or the tuple a layer returns)."""

    def __init__(self, model: MultimodalModel) -> None:
        self.model = model
        self.outputs: dict[str, dict[int, Any]] = {}

    @contextmanager
    def recording(self, modalities: Collection[str]) -> Iterator[None]:
        self.outputs = {m: {} for m in modalities}
        with ExitStack() as stack:
            for m in modalities:
                layers = self.model.depth_layers(m)
                for g, layer_range in enumerate(self.model.depth_groups(m)):
                    hook = self._recorder(m, g)
                    stack.callback(layers[layer_range[-1]].register_forward_hook(hook).remove)
            yield

    def _recorder(self, modality: str, group: int) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[modality][group] = output

        return hook

    def clear(self) -> None:
        self.outputs = {}


class _Alteration:
    """Layers `[0, replay_until)` of `modality`'s encoder return `replayed` instead of computing, and
    the output units of each module in `masks` are multiplied by its mask: while inside `running()`,
    and again around the backward recompute of a layer checkpointed inside it."""

    def __init__(
        self,
        model: MultimodalModel,
        modality: str,
        replay_until: int,
        replayed: Any,
        masks: Mapping[nn.Module, torch.Tensor],
    ) -> None:
        self.model, self.modality = model, modality
        self.replay_until, self.replayed, self.masks = replay_until, replayed, masks
        self._inside = False

    @contextmanager
    def _applied(self) -> Iterator[None]:
        layers = self.model.depth_layers(self.modality)
        replayed = self.replayed
        with ExitStack() as stack:
            for module, mask in self.masks.items():
                stack.callback(module.register_forward_hook(_unit_mask_hook(mask)).remove)
            for module in self.model.encoders[self.modality].modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                    module.track_running_stats = False  # in training mode: batch statistics, no update
                    stack.callback(setattr, module, "track_running_stats", True)
            for i in range(self.replay_until):
                layers[i].forward = types.MethodType(lambda self, *a, **k: replayed, layers[i])
                stack.callback(layers[i].__dict__.pop, "forward")
            yield

    def _recomputed_as_run(self, checkpoint_func: Callable) -> Callable:
        """`checkpoint_func` (the encoder's gradient checkpointing function) around a layer function
        that, when the backward pass recomputes the layer, first puts this alteration back."""

        def checkpointed(function: Callable, *args: Any, **kwargs: Any) -> Any:
            def run(*a: Any, **k: Any) -> Any:
                if self._inside:  # the forward itself: the alteration is in force
                    return function(*a, **k)
                with self._applied():
                    return function(*a, **k)

            return checkpoint_func(run, *args, **kwargs)

        return checkpointed

    @contextmanager
    def running(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(self._applied())
            # transformers sets `_gradient_checkpointing_func` on every module that checkpoints.
            for module in self.model.encoders[self.modality].modules():
                checkpoint_func = module.__dict__.get("_gradient_checkpointing_func")
                if checkpoint_func is not None and getattr(module, "gradient_checkpointing", False):
                    module._gradient_checkpointing_func = self._recomputed_as_run(checkpoint_func)
                    stack.callback(setattr, module, "_gradient_checkpointing_func", checkpoint_func)
            self._inside = True
            stack.callback(setattr, self, "_inside", False)
            yield


def encode_replayed(
    model: MultimodalModel,
    modality: str,
    inputs: Mapping[str, Any],
    replay_until: int,
    replayed: Any,
    masks: Mapping[nn.Module, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Pooled final feature of `modality`'s encoder run on `inputs` with layers `[0, replay_until)`
    returning `replayed` instead of computing, and the units of the modules in `masks` switched off."""
    recorder = GroupOutputs(model)
    last = len(model.depth_groups(modality)) - 1
    with _Alteration(model, modality, replay_until, replayed, masks or {}).running():
        with recorder.recording([modality]):
            model.encoders[modality](**inputs)
    return model.pool(modality, hidden_state(recorder.outputs[modality][last]), inputs)


def _encode_masked(
    model: MultimodalModel,
    modality: str,
    inputs: Mapping[str, Any],
    masks: Mapping[str, torch.Tensor],
    group_outputs: Mapping[int, Any],
) -> torch.Tensor:
    """Final feature of `modality` with the units in `masks` switched off, recomputed from the first
    masked depth group: the layers before it replay the normal pass's output (`group_outputs`)."""
    units = {
        name: (g, module) for g, group in enumerate(model.unit_modules(modality)) for name, module in group.items()
    }
    unknown = [name for name in masks if name not in units]
    if unknown:
        raise ValueError(f"AIM's masks for {modality!r} name modules that are not its units (unit_modules): {unknown[:3]}")
    start = min(units[name][0] for name in masks)
    replayed = group_outputs[start - 1] if start > 0 else None
    by_module = {units[name][1]: mask for name, mask in masks.items()}
    return encode_replayed(model, modality, inputs, model.depth_groups(modality)[start][0], replayed, by_module)


def auxiliary_logits(
    model: MultimodalModel,
    inputs: Mapping[str, Mapping[str, Any]],
    features: Mapping[str, torch.Tensor],
    group_outputs: Mapping[str, Mapping[int, Any]],
    masks: Mapping[str, Mapping[str, torch.Tensor]],
    detach: Collection[str] = (),
    head_grad: bool = True,
) -> torch.Tensor:
    """The fused logits of the Auxiliary Blocks' pass: each modality of `masks` (modality -> unit name
    -> 0/1 mask over its output units) recomputed with those units off, the others' final `features`
    as the normal pass gave them. Modalities in `detach` enter the fusion detached (a masked one is
    recomputed without a graph), so that a loss on the logits does not reach their encoders;
    `head_grad=False` fuses with detached parameters, so that it does not reach the head."""
    aux_features = {m: f.detach() if m in detach else f for m, f in features.items()}
    for m, unit_masks in masks.items():
        with torch.set_grad_enabled(torch.is_grad_enabled() and m not in detach):
            aux_features[m] = _encode_masked(model, m, inputs[m], unit_masks, group_outputs[m])
    if head_grad:
        logits, _ = model.fusion(aux_features)
    else:
        frozen = {name: p.detach() for name, p in model.fusion.named_parameters()}
        logits, _ = torch.func.functional_call(model.fusion, frozen, (aux_features,))
    return logits


# Whether an encoder's layers return a bare tensor (else a tuple led by it), by layer list.
_RETURNS_TENSOR: WeakKeyDictionary[nn.Module, bool] = WeakKeyDictionary()


def _raw_group_outputs(model: MultimodalModel, modality: str, inputs: Mapping[str, Any]) -> dict[int, Any]:
    recorder = GroupOutputs(model)
    with recorder.recording([modality]):
        model.encoders[modality](**inputs)
    _RETURNS_TENSOR[model.depth_layers(modality)] = isinstance(recorder.outputs[modality][0], torch.Tensor)
    return recorder.outputs[modality]


def encode_from_depth(
    model: MultimodalModel, modality: str, depth: int, hidden: torch.Tensor, inputs: Mapping[str, Any]
) -> torch.Tensor:
    """Pooled final feature of `modality` when the output of depth group `depth` is `hidden`: the
    layers after that group run on it, the earlier ones are replayed (not computed; of layers that
    return a tuple, the rest of the tuple comes from one no-grad run on `inputs`). `inputs` only
    drive the encoder's call (its embeddings run, their output is unused) and its masks: they must
    fit `hidden`'s batch (and, where the layers get more than the hidden state from the previous
    one, such as a position bias or a Swin stage's grid, its length). Decodes learned prototypes."""
    groups = model.depth_groups(modality)
    if depth == len(groups) - 1:
        return model.pool(modality, hidden, inputs)
    layers = model.depth_layers(modality)
    replayed: Any = hidden
    if not _RETURNS_TENSOR.get(layers, False):
        # The rest of the layer's output (a position bias, a Swin stage's grid) as these inputs give it.
        with torch.no_grad():
            raw = _raw_group_outputs(model, modality, inputs)
        if not _RETURNS_TENSOR[layers]:
            replayed = (hidden, *raw[depth][1:])
    return encode_replayed(model, modality, inputs, groups[depth][-1] + 1, replayed)
