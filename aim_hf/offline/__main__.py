"""`python -m aim_hf.offline NAME OUTPUT_DIR [--clip_seconds N] [--image_size N]`: convert one
offline encoder from its installed package (see `aim_hf.offline`)."""

from __future__ import annotations

import argparse
import sys

from .registry import ENCODERS, convert


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and convert; a one-line error (exit status 2) for any refused input."""
    names = "\n".join(f"  {name}: {what}" for name, (what, _) in ENCODERS.items())
    parser = argparse.ArgumentParser(
        prog="python -m aim_hf.offline",
        description="Convert a pretrained encoder shipped in a pip package into a transformers folder.",
        epilog=f"encoders:\n{names}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("name", choices=list(ENCODERS), metavar="NAME")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR")
    parser.add_argument("--clip_seconds", type=int, help="Whisper: clip length in whole seconds, 1-30 (default 30)")
    parser.add_argument("--image_size", type=int, help="MobileNetV2: side of the square crop (default 224)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.name, args.output_dir, clip_seconds=args.clip_seconds, image_size=args.image_size)
    except (ValueError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.name} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
