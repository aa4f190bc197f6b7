"""[`SpectrogramFeatureExtractor`] lives in `aim_hf/spectrogram.py`, next to the processor whose remote
code imports it; this name is kept for the data modules."""

from ..spectrogram import SpectrogramFeatureExtractor

__all__ = ["SpectrogramFeatureExtractor"]
