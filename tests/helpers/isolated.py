"""Python code run where aim_hf cannot be imported, as on a machine that only downloaded a pushed model."""

import os
import subprocess
import sys

# Run first in the subprocess: any import of aim_hf fails, as where it is not installed.
BLOCK_AIM_HF = """
import importlib.abc, sys

class _NoAimHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "aim_hf" or name.startswith("aim_hf."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, _NoAimHf())
"""


def run_without_aim_hf(code: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """Run `code` with `python -I` (no PYTHONPATH, no script folder on sys.path) and aim_hf blocked."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cwd / "hf_modules")}
    done = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_AIM_HF + code, *args], capture_output=True, text=True, env=env, cwd=cwd,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done
