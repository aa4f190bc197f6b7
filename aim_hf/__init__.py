"""aim_hf: balanced multimodal learning (AIM, OGM-GE and the other methods `aim-hf methods` lists) for
Hugging Face encoders."""

from .collator import MultimodalCollator
from .configuration import MultimodalConfig
from .data.unimodal import BlankModalities
from .metrics import MultimodalMetrics
from .modeling import MultimodalModel, MultimodalOutput, register_auto_classes
from .modulation import MODULATIONS, Modulation, build_modulation
from .processing import MultimodalProcessor  # registers it with AutoProcessor
from .spectrogram import SpectrogramFeatureExtractor  # registers it with AutoFeatureExtractor
from .trainer import AIMTrainer
from .training_args import AIMConfig

register_auto_classes()

__version__ = "0.1.0"
__all__ = [
    "AIMConfig",
    "AIMTrainer",
    "BlankModalities",
    "MODULATIONS",
    "Modulation",
    "MultimodalCollator",
    "MultimodalConfig",
    "MultimodalMetrics",
    "MultimodalModel",
    "MultimodalOutput",
    "MultimodalProcessor",
    "SpectrogramFeatureExtractor",
    "build_modulation",
    "__version__",
]
