"""Docs and docstrings cite nothing outside the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_file_cites_the_specification_kept_outside_the_repository():
    """The method's specification was once a file beside the repository; the docs now say what they
    mean (the paper, docs/method.md) instead of citing it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    name = "AIM_" + "SPEC"  # spelled apart, so that this file does not cite it either
    citing = [path for path in tracked if path.endswith((".py", ".md")) and name in (ROOT / path).read_text()]
    assert not citing, f"these files cite {name}.md, which is not in the repository: {citing}"
