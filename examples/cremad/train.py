"""Train a vision + audio emotion classifier on CREMA-D with balanced multimodal learning (AIM).

    python examples/cremad/train.py --data_dir data/CREMA-D --output_dir cremad-aim --do_train --do_eval
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/cremad/train.py ...

Layout (the OGM-GE one; every path is an option, relative to --data_dir or absolute):

    <data_dir>/AudioWAV/<clip>.wav               16 kHz mono wavs, as CREMA-D ships them
    <data_dir>/Image-01-FPS/<clip>/*.jpg         frames extracted at 1 fps, one folder per clip
    <data_dir>/train.csv, <data_dir>/test.csv    "<clip>,<EMOTION CODE>" lines, e.g. "1001_DFA_ANG_XX,ANG"

Every AIMConfig / TrainingArguments option applies (`--modulation`, `--push_to_hub`, ...): see --help.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import AudioVisualDataArguments, main_audio_visual  # noqa: E402

# The six emotion codes of the clip lists, in OGM-GE's class order, and their names.
EMOTIONS = {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "FEA": "fear", "DIS": "disgust", "ANG": "anger"}


@dataclass
class CremaDArguments(AudioVisualDataArguments):
    audio_dir: str = field(default="AudioWAV", metadata={"help": "Folder of <clip>.wav files."})
    frames_dir: str = field(default="Image-01-FPS", metadata={"help": "Folder of per-clip frame folders."})


if __name__ == "__main__":
    main_audio_visual(CremaDArguments, dataset_name="CREMA-D", classes=EMOTIONS)
