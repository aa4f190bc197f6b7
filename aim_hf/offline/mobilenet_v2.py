"""torchvision's MobileNetV2 state dict (a `.pth` file) -> a transformers folder:
`MobileNetV2ForImageClassification` weights in safetensors, its config, and a Pillow image processor
that preprocesses as torchvision did for ImageNet.

transformers' `MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5, hidden_act="relu6")` builds the
same layers as torchvision's model, registered in the same order: the tensors pair off one to one
(torchvision's `classifier.1` is transformers' `classifier`). Each pair must agree in shape and in
kind (weight, bias, running mean, ...), else the conversion stops.

`AutoModel` loads the folder as `MobileNetV2Model` (the classifier dropped).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import MobileNetV2Config, MobileNetV2ForImageClassification, MobileNetV2ImageProcessorPil
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

IMAGE_SIZE = 224  # torchvision's ImageNet evaluation: short side to 256, centre crop of 224
STEM_CHANNELS = 32  # the first convolution's width at depth multiplier 1


def mobilenet_v2_config(state: dict[str, torch.Tensor]) -> MobileNetV2Config:
    """The transformers config of a torchvision MobileNetV2 state dict: its width (depth multiplier)
    from the first convolution, its number of classes from the classifier."""
    return MobileNetV2Config(
        depth_multiplier=state["features.0.0.weight"].shape[0] / STEM_CHANNELS,
        num_labels=state["classifier.1.weight"].shape[0],
        tf_padding=False,
        layer_norm_eps=1e-5,
        hidden_act="relu6",
    )


def mobilenet_v2_state_dict(
    state: dict[str, torch.Tensor], model: MobileNetV2ForImageClassification
) -> dict[str, torch.Tensor]:
    """`state` (torchvision's keys) under `model`'s keys, paired in registration order; refuses a
    pair that differs in shape or kind, or a different number of tensors."""
    ours = model.state_dict()
    if len(state) != len(ours):
        raise ValueError(f"the state dict has {len(state)} tensors, transformers' MobileNetV2 {len(ours)}.")
    mapped = {}
    for (theirs, tensor), (key, target) in zip(state.items(), ours.items()):
        if theirs.rsplit(".", 1)[-1] != key.rsplit(".", 1)[-1] or tensor.shape != target.shape:
            raise ValueError(
                f"{theirs} {tuple(tensor.shape)} does not pair with {key} {tuple(target.shape)}: "
                "not a torchvision MobileNetV2 state dict."
            )
        mapped[key] = tensor
    return mapped


def image_processor(image_size: int = IMAGE_SIZE) -> MobileNetV2ImageProcessorPil:
    """torchvision's ImageNet preprocessing scaled to `image_size`: short side to `image_size * 256 / 224`
    (bilinear), centre crop of `image_size`, ImageNet mean and standard deviation."""
    return MobileNetV2ImageProcessorPil(
        size={"shortest_edge": round(image_size * 256 / 224)},
        crop_size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BILINEAR,
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
    )


def convert_mobilenet_v2(
    weights: str | os.PathLike, output_dir: str | os.PathLike, image_size: int = IMAGE_SIZE
) -> Path:
    """Write a transformers MobileNetV2 folder from torchvision's state dict file `weights`.

    Args:
        weights: the `.pth` file (a state dict, loaded with `weights_only=True`).
        output_dir: the folder to write (created).
        image_size: the side of the square crop the image processor makes (the network is
            convolutional: any size from 32 works; ImageNet's was 224).
    """
    if not (isinstance(image_size, int) and image_size >= 32):
        raise ValueError(f"image_size must be a whole number of pixels, at least 32, got {image_size!r}.")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    config = mobilenet_v2_config(state)
    config.image_size = image_size
    model = MobileNetV2ForImageClassification(config)
    model.load_state_dict(mobilenet_v2_state_dict(state, model), strict=True)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    image_processor(image_size).save_pretrained(output_dir)
    return output_dir


__all__ = ["convert_mobilenet_v2", "image_processor", "mobilenet_v2_config", "mobilenet_v2_state_dict"]
