"""Loading a saved AV-digits model as its card says: with aim_hf imported, and with only transformers
(in a subprocess where aim_hf cannot be imported), model and processor both; and the card's usage
snippet, executed as written on a row of the training data."""

from __future__ import annotations

import ast
import json
import re

import numpy as np
import pytest
import torch
from isolated import run_without_aim_hf
from tiny import TINY_OPTIONS
from transformers import AutoModel, AutoProcessor

from aim_hf import MultimodalCollator, MultimodalModel, MultimodalProcessor
from aim_hf.cli import main
from aim_hf.data import load_av_digits


LOAD_AND_RUN = """
import json, sys
import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

folder, example_dir = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
example = {"vision": Image.open(f"{example_dir}/vision.png"), "audio": np.load(f"{example_dir}/audio.npy")}
inputs = {
    "vision": dict(processor["vision"](images=example["vision"].convert("RGB"), return_tensors="pt")),
    "audio": dict(processor["audio"](example["audio"], return_tensors="pt")),
}
with torch.no_grad():
    logits = model(**inputs).logits
print(json.dumps({
    "model": type(model).__module__, "processor": type(processor).__module__,
    "audio": type(processor["audio"]).__module__, "kinds": processor.kinds, "logits": logits.tolist(),
    "aim_hf_loaded": sorted(n for n in sys.modules if n.startswith("aim_hf")),
}))
"""

RUN_CARD = """
import sys
import numpy as np
from PIL import Image

folder, example_dir = sys.argv[1], sys.argv[2]
example = {"vision": Image.open(f"{example_dir}/vision.png"), "audio": np.load(f"{example_dir}/audio.npy")}
exec(open(f"{example_dir}/snippet.py").read())
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An AV-digits model trained by `aim-hf train`, a training row, and its logits from aim_hf."""
    root = tmp_path_factory.mktemp("remote")
    out = root / "model"
    assert main(["train", "--output_dir", str(out), *TINY_OPTIONS]) == 0
    row = load_av_digits()["train"][0]
    model = MultimodalModel.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(**MultimodalCollator(MultimodalProcessor.from_pretrained(out))([row])).logits
    example_dir = root / "example"
    example_dir.mkdir()
    row["vision"].save(example_dir / "vision.png")  # grayscale, as the dataset holds it
    np.save(example_dir / "audio.npy", np.asarray(row["audio"], dtype=np.float32))
    return out, row, logits, example_dir




def test_saved_folder_carries_the_processor_code(trained):
    out = trained[0]
    code = ("modeling.py", "configuration.py", "processing.py", "spectrogram.py", "raw_inputs.py")
    for name in (*code, "processor_config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing.MultimodalProcessor"
    }
    # The remote code imports only transformers, torch, numpy and its own files (Pillow and soundfile
    # inside the functions that read an image or an audio file).
    for name in code:
        nodes = list(ast.walk(ast.parse((out / name).read_text())))
        imported = [a.name for n in nodes if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.level == 0]
        roots = {module.split(".")[0] for module in imported}
        assert roots <= {"__future__", "json", "os", "math", "types", "warnings", "collections", "contextlib",
                         "dataclasses", "typing", "torch", "transformers", "numpy", "io", "inspect", "PIL",
                         "soundfile"}, (name, roots)  # fmt: skip


def test_loadsrun_without_aim_hf(trained, tmp_path):
    out, _, logits, example_dir = trained
    report = json.loads(run_without_aim_hf(LOAD_AND_RUN, str(out), str(example_dir), cwd=tmp_path).stdout.splitlines()[-1])
    assert report["aim_hf_loaded"] == []
    for key in ("model", "processor", "audio"):
        assert report[key].startswith("transformers_modules."), report
    assert report["kinds"] == {"vision": "image", "audio": "audio"}
    torch.testing.assert_close(torch.tensor(report["logits"]), logits)


def test_loads_with_aim_hf_imported_without_remote_code(trained):
    out, row, logits, _ = trained
    model = AutoModel.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(model, MultimodalModel) and isinstance(processor, MultimodalProcessor)
    with torch.no_grad():
        torch.testing.assert_close(model(**MultimodalCollator(processor)([row])).logits, logits)


def _card_snippet(out) -> str:
    text = (out / "README.md").read_text()
    code = re.search(r"## Usage\n.*?```python\n(.*?)```", text, re.S).group(1)
    assert 'repo_id = "model"' in code  # the folder's name, as the card was written
    return code.replace('repo_id = "model"', f"repo_id = {str(out)!r}")


def test_card_snippet_runs_on_a_training_row(trained, capsys):
    """As written (only the repo id pointed at the folder), on a row exactly as the dataset gives it:
    a grayscale PIL image and the spectrogram as nested lists."""
    out, row, logits, _ = trained
    assert row["vision"].mode == "L" and isinstance(row["audio"], list)
    namespace = {"example": row}
    exec(compile(_card_snippet(out), "model_card_usage", "exec"), namespace)
    torch.testing.assert_close(namespace["logits"], logits)
    assert capsys.readouterr().out.strip() == namespace["model"].config.id2label[logits.argmax(-1).item()]


def test_card_snippet_runsrun_without_aim_hf(trained, tmp_path):
    out, _, logits, example_dir = trained
    (example_dir / "snippet.py").write_text(_card_snippet(out))
    printed = run_without_aim_hf(RUN_CARD, str(out), str(example_dir), cwd=tmp_path).stdout.strip().splitlines()[-1]
    assert printed == MultimodalModel.from_pretrained(out).config.id2label[logits.argmax(-1).item()]
