"""`aim-hf methods [NAME]`: every registered modulation method with its paper, or one method's
default window, options (type, default and help), the metrics it logs and its citation, as the
method declares them (`aim_hf.modulation.base`)."""

from __future__ import annotations

import json
import sys
import textwrap

from aim_hf.modulation import MODULATIONS
from aim_hf.modulation.base import Modulation

USAGE = "aim-hf methods [NAME]"
_WIDTH = 100


def _paper_line(cls: type[Modulation]) -> str:
    paper = cls.paper
    return f"{paper.title} ({paper.venue}), {paper.url}" if paper else "no paper (a baseline)"


def _indented(text: str, indent: int) -> list[str]:
    pad = " " * indent
    return textwrap.wrap(text, _WIDTH, initial_indent=pad, subsequent_indent=pad) or [pad.rstrip()]


def _step(value: float) -> str:
    """A schedule value as `resolve_step` reads it: a fraction of training below 1, else a step."""
    return f"{value:g} of the steps" if value < 1 else f"step {value:g}"


def _window_line(cls: type[Modulation]) -> str:
    """The window of optimizer steps the method modulates in by default."""
    start, end = cls.default_start, cls.default_end
    if start == 0 and end is None:
        return "Default window: the whole run."
    first = _step(start) if start else "the first step"
    last = _step(end) if end is not None else "the end"
    return f"Default window: from {first} to {last} (--modulation_start / --modulation_end change it)."


def list_methods() -> str:
    """Every registered method: its name, title and paper."""
    width = max(len(name) for name in MODULATIONS) + 2
    lines = [f"Modulation methods (--modulation NAME; `{USAGE}` shows one method's options):", ""]
    for name, cls in MODULATIONS.items():
        lines.append(f"{name:<{width}}{cls.title}")
        lines += _indented(_paper_line(cls), width)
    return "\n".join(lines)


def describe_method(name: str) -> str:
    """One method: its title and paper, its default window, its options with their types, defaults
    and help, the metrics it logs and its BibTeX citation. Raises a ValueError for a name that is
    not registered."""
    if name not in MODULATIONS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(MODULATIONS)}.")
    cls = MODULATIONS[name]
    lines = [f"{name}: {cls.title}", f"Paper: {_paper_line(cls)}", _window_line(cls), ""]
    options = cls.options()
    if not options:
        lines.append("Options: none of its own.")
    else:
        lines.append(f"Options (keys of --modulation_kwargs, a JSON object, e.g. '{{\"{options[0].name}\": ...}}'):")
    for option in options:
        lines.append(f"  {option.name}: {json.dumps(option.default)}  ({option.type})")
        lines += _indented(option.help, 6)
    if cls.metrics:
        lines += ["", "Logs, per optimizer step (<m> a modality, <d> a depth group):"]
        for metric in cls.metrics:
            lines.append(f"  {metric.key}")
            lines += _indented(metric.help, 6)
    if cls.citation:
        lines += ["", "Citation:", textwrap.indent(cls.citation, "  ")]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """`aim-hf methods [NAME]`: print the list, or one method's description; 2 on a wrong call."""
    if argv in (["-h"], ["--help"]):
        print(f"usage: {USAGE}")
        return 0
    if len(argv) > 1 or any(arg.startswith("-") for arg in argv):
        print(f"usage: {USAGE}", file=sys.stderr)
        return 2
    try:
        print(describe_method(argv[0]) if argv else list_methods())
    except ValueError as err:
        print(f"aim-hf methods: error: {err}", file=sys.stderr)
        return 2
    return 0
