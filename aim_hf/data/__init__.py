"""Data for aim_hf: the embedded AV-digits dataset, its processors, and unimodal baselines."""

from .av_digits import (
    LABEL_NAMES,
    MODALITIES,
    av_digits_encoders,
    av_digits_processor,
    default_encoder_configs,
    init_token_embeddings,
    load_av_digits,
    mfcc_to_log_mel,
)
from .spectrogram import SpectrogramFeatureExtractor
from .unimodal import BlankModalities

__all__ = [
    "LABEL_NAMES",
    "MODALITIES",
    "BlankModalities",
    "SpectrogramFeatureExtractor",
    "av_digits_encoders",
    "av_digits_processor",
    "default_encoder_configs",
    "init_token_embeddings",
    "load_av_digits",
    "mfcc_to_log_mel",
]
