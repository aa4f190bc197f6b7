"""The `aim-hf` command line: a dispatcher (`aim_hf.cli.main`) over one script per command
(`aim_hf.scripts`, and `aim_hf.compare.command`)."""

from aim_hf.cli.main import main

__all__ = ["main"]
