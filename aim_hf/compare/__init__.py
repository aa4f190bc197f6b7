"""Compare balancing methods on your own data: `aim-hf compare` trains each method over paired seeds
(and each modality alone), each run exactly as `aim-hf train` would, keeps every run's result in a
work folder (an interrupted comparison resumes), and reports accuracies, paired 95% intervals and a
verdict (`aim_hf.compare.command`). The statistics live in `aim_hf.stats`."""

from aim_hf.compare.command import main

__all__ = ["main"]
