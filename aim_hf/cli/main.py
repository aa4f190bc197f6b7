"""`aim-hf COMMAND [...]`: hands the arguments to the command's script and shows any error it raises
in one line (`--debug`, or `AIM_HF_DEBUG=1`, shows the traceback). Each command is one module with
a `main(argv) -> int`, imported only when its command runs."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap

DEBUG_ENV = "AIM_HF_DEBUG"
# command -> (its module, what it does), in the order the usage lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "aim_hf.scripts.train",
        "train a balanced multimodal model on the embedded AV-digits data, a setting for pretrained encoders "
        "(--setting) or your own (--dataset_name), evaluate and save it",
    ),
    "evaluate": (
        "aim_hf.scripts.evaluate",
        "a saved model's fused and probe accuracy and each modality's contribution (accuracy alone, Shapley "
        "value) on a split of the embedded data or your own (--dataset_name)",
    ),
    "methods": ("aim_hf.scripts.methods", "the balanced-learning methods with their papers, or one method's options"),
    "compare": (
        "aim_hf.compare.command",
        "train several balancing methods over paired seeds (and each modality alone) on the same data and report "
        "which helps, with paired 95% intervals and a verdict",
    ),
}


def usage() -> str:
    """The command list, each with what it does and how to see its own options."""
    lines = ["usage: aim-hf COMMAND [...]", "", "commands:"]
    for name, (_, summary) in COMMANDS.items():
        lines += textwrap.wrap(summary, 100, initial_indent=f"  {name:<10}", subsequent_indent=" " * 12)
    lines += ["", "`aim-hf COMMAND --help` lists a command's options."]
    return "\n".join(lines)


def error_line(command: str, err: Exception) -> str:
    """An error as one line naming it: a check's ValueError by its message, any other by its type too."""
    message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
    return f"aim-hf {command}: error: {' '.join(message.split())}\n(--debug or {DEBUG_ENV}=1 shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    """Run `aim-hf ARGV`; returns the exit status (2 for a wrong call or an error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, argv = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"aim-hf: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    script = importlib.import_module(COMMANDS[command][0])
    try:
        return script.main(argv)
    except Exception as err:  # every error, one line (KeyboardInterrupt and --help's SystemExit pass)
        if debug:
            raise
        print(error_line(command, err), file=sys.stderr)
        return 2
