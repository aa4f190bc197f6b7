"""How a pretrained encoder's BatchNorm layers behave while fine-tuning (`aim-hf train --batch_norm`).

transformers' MobileNetV2 builds its BatchNorm layers with `momentum=0.997` (TensorFlow's decay
read as PyTorch's momentum), so in training mode each batch replaces almost all of the ImageNet
running statistics: after a few small batches the statistics the model evaluates with are those of
the last batch. The policies here keep them, or average them as torchvision does.
"""

from __future__ import annotations

from torch import nn

BATCH_NORM_POLICIES = ("as_loaded", "eval")


def check_batch_norm(policy: str) -> str:
    """`policy`, checked: "as_loaded", "eval", or a momentum in [0, 1] written as a number; a
    one-line error otherwise."""
    if policy in BATCH_NORM_POLICIES:
        return policy
    try:
        momentum = float(policy)
    except ValueError:
        momentum = -1.0
    if not 0 <= momentum <= 1:
        raise ValueError(f"--batch_norm must be 'as_loaded', 'eval' or a momentum in [0, 1], got {policy!r}.")
    return policy


def _keep_eval(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: the layer normalises with its stored statistics even when the model trains."""
    module.training = False


def apply_batch_norm(model: nn.Module, policy: str) -> int:
    """Apply the checked `policy` to every BatchNorm layer of `model`; returns how many there are.

    - "as_loaded": nothing changes;
    - "eval": each layer always normalises with its stored (pretrained) statistics and never
      updates them, in training too; its scale and shift still train where not frozen;
    - a number: each layer's momentum (PyTorch's meaning: the weight of the new batch; 0.1 is
      torchvision's), so the statistics are averaged over many batches.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if policy == "as_loaded":
        return len(layers)
    for layer in layers:
        if policy == "eval":
            layer.register_forward_pre_hook(_keep_eval)
        else:
            layer.momentum = float(policy)
    return len(layers)


__all__ = ["BATCH_NORM_POLICIES", "apply_batch_norm", "check_batch_norm"]
