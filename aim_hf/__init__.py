"""aim_hf: balanced multimodal learning (AIM, OGM-GE) for Hugging Face encoders."""

from .collator import MultimodalCollator, MultimodalProcessor
from .configuration import MultimodalConfig
from .data.spectrogram import SpectrogramFeatureExtractor  # registers it with AutoFeatureExtractor
from .metrics import MultimodalMetrics
from .modeling import MultimodalModel, MultimodalOutput, register_auto_classes
from .modulation import MODULATIONS, Modulation, build_modulation
from .trainer import AIMTrainer
from .training_args import AIMConfig

register_auto_classes()

__version__ = "0.1.0"
__all__ = [
    "AIMConfig",
    "AIMTrainer",
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
