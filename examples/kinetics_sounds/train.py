"""Train a vision + audio action classifier on Kinetics-Sounds (31 classes) with AIM.

    python examples/kinetics_sounds/train.py --data_dir data/kinetics_sounds --output_dir ks-aim --do_train --do_eval
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/kinetics_sounds/train.py ...

Layout (every path is an option, relative to --data_dir or absolute):

    <data_dir>/audio/<clip>.wav                  audio track of each 10 s clip (16 kHz mono preferred)
    <data_dir>/frames/<clip>/*.jpg               frames extracted from the clip, one folder per clip
    <data_dir>/train.csv, <data_dir>/test.csv    "<clip>,...,<label>" lines: the label is the class
                                                 name ("playing drums") or its index (OGM-GE's lists)
    <data_dir>/classes.txt (optional)            class names in index order, with --classes_file classes.txt

Every AIMConfig / TrainingArguments option applies (`--modulation`, `--push_to_hub`, ...): see --help.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import AudioVisualDataArguments, main_audio_visual  # noqa: E402

if __name__ == "__main__":
    main_audio_visual(AudioVisualDataArguments, dataset_name="Kinetics-Sounds")
