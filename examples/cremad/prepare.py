"""Write CREMA-D (OGM-GE's layout) as the csv files `examples/cremad/recipe.yaml` reads.

    python examples/cremad/prepare.py data/CREMA-D      # writes data/CREMA-D/aim_hf/{train,test}.csv

Layout: `AudioWAV/<clip>.wav`, `Image-01-FPS/<clip>/*.jpg`, and the lists `train.csv` / `test.csv`
("<clip>,<EMOTION CODE>" lines). The emotion codes are written as their names. Every option of
`examples/av_clips.py` applies.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from av_clips import main  # noqa: E402

EMOTIONS = {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "FEA": "fear", "DIS": "disgust", "ANG": "anger"}

if __name__ == "__main__":
    main(defaults={"audio_dir": "AudioWAV", "frames_dir": "Image-01-FPS"}, names=EMOTIONS)
