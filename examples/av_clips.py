"""Turn an audio-visual clip dataset into the csv files an `aim-hf train` recipe reads.

The input is the OGM-GE layout: one wav per clip, a folder of frames per clip, and clip lists (CSV,
first column the clip, last column its label: a class name or a class index). The output is one
csv per split (`train.csv`, `validation.csv`, `test.csv`) with a row per clip: `image` (the path of
its middle frame), `audio` (the path of its wav) and `label` (its class name, or its index where no
names are known). `aim-hf train --dataset_name OUTPUT_DIR` then loads the folder as csv splits.

    python examples/av_clips.py DATA_DIR [--audio_dir audio] [--frames_dir frames] \
        [--train_list train.csv] [--validation_list val.csv] [--test_list test.csv] \
        [--classes_file classes.txt] [--output_dir DATA_DIR/aim_hf]

Paths in the output are absolute, so the recipe runs from any folder. Clips listed without a wav or
without frames are skipped with a warning (as the OGM-GE loaders do).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Mapping, Sequence

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_clip_list(path: str) -> list[tuple[str, str]]:
    """(clip, label) pairs from a CSV list: first column the clip, last column the label. A first
    row whose last column is `label` is taken as a header."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = [row for row in csv.reader(f) if row and row[0].strip()]
    if rows and rows[0][-1].strip().lower() == "label":
        rows = rows[1:]
    return [(row[0].strip(), row[-1].strip()) for row in rows]


def middle_frame(folder: str) -> str | None:
    """The middle frame image of a clip's folder (in name order), or None if it has none."""
    if not os.path.isdir(folder):
        return None
    frames = sorted(f for f in os.listdir(folder) if f.lower().endswith(FRAME_SUFFIXES))
    return os.path.join(folder, frames[len(frames) // 2]) if frames else None


def class_name(label: str, classes: Sequence[str] | None = None, names: Mapping[str, str] | None = None) -> str:
    """A list's label as written in the output: renamed by `names`, or for an index the class of
    that index in `classes`, else as it is."""
    if names:
        if label not in names:
            raise ValueError(f"label {label!r} is not one of {list(names)}.")
        return names[label]
    if classes is not None and label.isdigit():
        return classes[int(label)]
    return label


def write_split(
    clips: Sequence[tuple[str, str]],
    audio_dir: str,
    frames_dir: str,
    path: str,
    classes: Sequence[str] | None = None,
    names: Mapping[str, str] | None = None,
) -> int:
    """Write the csv of one split to `path`; returns how many clips it holds."""
    rows, missing = [], []
    for clip, label in clips:
        wav, frame = os.path.join(audio_dir, f"{clip}.wav"), middle_frame(os.path.join(frames_dir, clip))
        if os.path.isfile(wav) and frame:
            rows.append((os.path.abspath(frame), os.path.abspath(wav), class_name(label, classes, names)))
        else:
            missing.append(clip)
    if missing:
        print(f"{path}: skipped {len(missing)} clips with no wav or frames (first: {missing[0]!r}).", file=sys.stderr)
    if not rows:
        raise ValueError(f"no clip of {path} has both {audio_dir}/<clip>.wav and frames in {frames_dir}/<clip>/.")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "audio", "label"))
        writer.writerows(rows)
    return len(rows)


def main(
    argv: Sequence[str] | None = None, defaults: Mapping[str, str] | None = None, names: Mapping[str, str] | None = None
) -> None:
    """Parse the options (`defaults` replace the parser's, for a dataset's own layout) and write the
    splits; `names` renames the labels of the lists (e.g. CREMA-D's emotion codes)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="Root folder of the dataset; the other paths are relative to it.")
    parser.add_argument("--audio_dir", default="audio", help="Folder of <clip>.wav files.")
    parser.add_argument("--frames_dir", default="frames", help="Folder of per-clip frame folders.")
    parser.add_argument("--train_list", default="train.csv", help="Training clip list.")
    parser.add_argument("--validation_list", default=None, help="Validation clip list (default: none).")
    parser.add_argument("--test_list", default="test.csv", help="Test clip list.")
    parser.add_argument("--classes_file", default=None, help="Class names by index, one per line.")
    parser.add_argument("--output_dir", default=None, help="Where the csv files go (default: DATA_DIR/aim_hf).")
    parser.set_defaults(**(defaults or {}))
    args = parser.parse_args(argv)
    root = args.data_dir
    classes = None
    if args.classes_file:
        with open(os.path.join(root, args.classes_file)) as f:
            classes = [line.strip() for line in f if line.strip()]
    output_dir = args.output_dir or os.path.join(root, "aim_hf")
    os.makedirs(output_dir, exist_ok=True)
    for split in ("train", "validation", "test"):
        listed = getattr(args, f"{split}_list")
        if listed:
            clips = read_clip_list(os.path.join(root, listed))
            out = os.path.join(output_dir, f"{split}.csv")
            count = write_split(
                clips, os.path.join(root, args.audio_dir), os.path.join(root, args.frames_dir), out, classes, names
            )
            print(f"{out}: {count} clips")


if __name__ == "__main__":
    main()
