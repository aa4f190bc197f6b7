"""A method is its own file plus one registry line: no method file imports another's, every method
declares what the library shows about it, what it declares is what it logs, and a newly registered
method reaches `aim-hf methods`, the `--modulation` help, the model card, the console and the plots."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from aim_hf import AIMConfig, AIMTrainer, MultimodalModel, MultimodalProcessor
from aim_hf.cli import main
from aim_hf.scripts.train import build_parser
from aim_hf.console import format_log
from aim_hf.modulation import MODULATIONS, build_modulation
from aim_hf.modulation.base import Metric, Modulation, Paper, Summary
from aim_hf.plotting import modulation_curves, panel_title
from tiny import NUM_LABELS, make_rows, tiny_args

PACKAGE = Path(__file__).resolve().parents[2] / "aim_hf" / "modulation"
SHARED = {"base", "mechanics"}  # what every method may import from its own package


def _sibling_imports(source: str, package: tuple[str, ...] = ("aim_hf", "modulation")) -> set[str]:
    """The modules of `aim_hf.modulation` that `source`, a file of `package` (`aim_hf.modulation` or one
    of its method packages), imports anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
            else:  # relative to the file's package (level 1) or a package above it
                parts = list(package[: len(package) + 1 - node.level]) + (node.module or "").split(".")
            parts = [p for p in parts if p]
            if parts[:2] == ["aim_hf", "modulation"]:
                found |= {parts[2]} if len(parts) > 2 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[:2] == ["aim_hf", "modulation"] and len(parts) > 2:
                    found.add(parts[2])
    return found


def test_the_import_check_sees_every_form():
    source = (
        "from ..modeling import MultimodalModel\nfrom .base import Modulation\nfrom . import opm\n"
        "def f():\n    from .ogm_ge import x\n    from ..modulation.pmr import y\n"
        "import aim_hf.modulation.agm\nfrom aim_hf.modulation.mla import z\n"
    )
    assert _sibling_imports(source) == {"base", "opm", "ogm_ge", "pmr", "agm", "mla"}
    # In a method's package (aim_hf.modulation.aim): its own modules, then the levels above.
    in_package = (
        "from .masking import m\nfrom ..mechanics import x\n"
        "from .. import opm\nfrom ...modulation.pmr import y"
    )
    assert _sibling_imports(in_package, ("aim_hf", "modulation", "aim")) == {"aim", "mechanics", "opm", "pmr"}


def _method_files() -> dict[str, list[Path]]:
    """Each method of the package, a file or a package of files, with its files."""
    methods: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts == ("__init__.py",) or "__pycache__" in relative.parts:
            continue
        methods.setdefault(relative.parts[0].removesuffix(".py"), []).append(path)
    return {name: files for name, files in methods.items() if name not in SHARED}


def test_no_method_file_imports_another_method_file():
    methods = _method_files()
    assert {"aim", "ogm_ge", "opm", "pmr", "agm", "redreg", "inforeg", "mmpareto", "unimodal_losses"} <= set(methods)
    assert len(methods["aim"]) > 1  # a package: its files are checked one by one
    for name, files in methods.items():
        for path in files:
            package = ("aim_hf", "modulation", *path.relative_to(PACKAGE).parent.parts)
            imported_methods = _sibling_imports(path.read_text(), package) & (set(methods) - {name})
            where = path.relative_to(PACKAGE)
            assert not imported_methods, f"{where} imports the method file(s) {sorted(imported_methods)}"


def _metric_pattern(key: str) -> re.Pattern:
    """A declared metric key (`ogm/coeff/<m>`) as a pattern of the logged keys."""
    return re.compile(re.sub(r"<[a-z]+>", "[^/]+", re.escape(key)))


@pytest.mark.parametrize("name", list(MODULATIONS))
def test_every_method_declares_itself(name):
    cls = MODULATIONS[name]
    assert cls.name == name and cls.label and cls.title
    prefixes = {c.metric_prefix for c in MODULATIONS.values()}
    if name in ("none", "unimodal_losses"):  # the baselines: no paper to cite
        assert cls.paper is None and cls.citation is None
    else:
        assert isinstance(cls.paper, Paper) and cls.paper.url.startswith("https://")
        # A BibTeX entry whose title is the paper's (BibTeX braces protect capitals).
        entry = re.fullmatch(r"@(article|inproceedings)\{\w+,\n(.*)\n\}", cls.citation, re.S)
        assert entry, cls.citation
        title = re.search(r"^  title += \{(.*)\},$", entry.group(2), re.M)
        assert title and re.search(r"^  author += \{.+\},$", entry.group(2), re.M)
        assert re.sub("[{}]", "", title.group(1)) == cls.paper.title
    for option in cls.options():
        assert option.help and option.type, f"{name}'s option {option.name} has no help"
    for metric in cls.metrics:
        assert isinstance(metric, Metric) and metric.help
        assert metric.key.split("/")[0] in prefixes, f"{metric.key} is in no method's namespace"
    assert bool(cls.metrics) == bool(cls.metric_prefix)
    if cls.summary is not None:
        assert any(m.key.startswith(cls.summary.prefix + "/") for m in cls.metrics)


@pytest.mark.parametrize("name", list(MODULATIONS))
def test_default_window_is_a_share_of_training_the_method_runs_and_shows(name, build_model, make_args, capsys):
    """A method's default window is given as fractions of training (so that it scales with the run, as
    its reference's epochs do); a method built without `modulation_start` / `modulation_end` uses it,
    and `aim-hf methods NAME` shows it."""
    cls = MODULATIONS[name]
    start, end = cls.default_start, cls.default_end
    assert 0 <= start < 1 and (end is None or start < end < 1), (start, end)
    method = build_modulation(name, build_model(modalities=("vision", "audio")), make_args(modulation=name))
    assert (method.start, method.end) == (start, end)
    assert method.is_active(int(start * 100), 100) and method.is_active(99, 100) == (end is None)
    assert main(["methods", name]) == 0
    shown = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Default window:"))
    if (start, end) == (0, None):
        assert shown == "Default window: the whole run."
    else:
        assert all(f"{value:g} of the steps" in shown for value in (start, end) if value)
        assert ("to the end" in shown) == (end is None)


def test_the_default_windows_are_the_references():
    """OGM-GE's reference modulates epochs 0-50 of 100, PMR's runs until epoch 70 of 130, OPM's reference
    drops nothing in epochs 0-5 of 100; the others modulate over the whole run (docs/methods/NAME.md)."""
    windows = {name: (cls.default_start, cls.default_end) for name, cls in MODULATIONS.items() if name != "aim"}
    whole = (0.0, None)
    assert windows == {
        "none": whole, "ogm_ge": (0.0, 0.5), "pmr": (0.0, 0.54), "opm": (0.06, None), "agm": whole, "mla": whole,
        "mmpareto": whole, "inforeg": whole, "redreg": whole, "unimodal_losses": whole,
    }  # fmt: skip


@pytest.mark.parametrize("name", [n for n in MODULATIONS if n != "none"])
def test_declared_metrics_are_what_a_method_logs(name, build_model, build_processor, build_dataset, make_args):
    """Every key a method logs in a short run matches one of its declared `metrics`."""
    modalities = ("vision", "audio")
    # AIM uncapped, from the first step and symmetric, so that the tiny run logs all its per-depth keys.
    aim = dict(modulation_kwargs={"dam_cap": "none", "min_lambda": 0.0, "pam": "symmetric"}, modulation_start=0)
    overrides = aim if name == "aim" else {}
    args = make_args(modulation=name, max_steps=3, logging_steps=1, eval_strategy="no", **overrides)
    trainer = AIMTrainer(
        model=build_model(modalities=modalities),
        args=args,
        train_dataset=build_dataset(n=18, modalities=modalities),
        processing_class=build_processor(modalities),
    )
    trainer.train()
    own = [k for log in trainer.state.log_history for k in log if "/" in k and not k.startswith(("loss/", "probe_"))]
    patterns = [_metric_pattern(m.key) for m in MODULATIONS[name].metrics]
    assert own, f"{name} logged nothing of its own"
    undeclared = sorted({k for k in own if not any(p.fullmatch(k) for p in patterns)})
    assert not undeclared, f"{name} logs keys it does not declare: {undeclared}"
    if name == "aim":
        assert {"aim/lambda/vision/depth_0", "aim/mu/audio/depth_0", "aim/masked_fraction/vision"} <= set(own)


@dataclass
class DummyConfig:
    strength: float = field(default=0.25, metadata={"help": "How hard the dummy pushes."})


class Dummy(Modulation):
    """A method defined outside the package: registered by one line, it must show up everywhere."""

    name = "dummy"
    label = "Dummy"
    title = "Dummy (a method registered by a test)"
    paper = Paper("A Paper About Nothing", "Nowhere 2026", "https://example.org/dummy")
    citation = "@article{dummy2026,\n  title  = {A Paper About Nothing},\n  author = {Nobody, A.},\n  year = {2026}\n}"
    metric_prefix = "dummy"
    metrics = (Metric("dummy/strength/<m>", "the strength on m"),)
    summary = Summary("dummy/strength", "max", "s")
    default_start, default_end = 0.25, 0.75
    Config = DummyConfig

    def on_gradients_ready(self, ctx):
        ctx.log({f"dummy/strength/{m}": self.config.strength * (i + 1) for i, m in enumerate(self.modalities)})


def test_a_registered_method_reaches_every_place(monkeypatch, capsys, encoder_paths, processors, tmp_path):
    monkeypatch.setitem(MODULATIONS, "dummy", Dummy)
    # aim-hf methods: in the list, and its own options, metrics and citation.
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^dummy +Dummy \(a method registered by a test\)$", listing, re.M)
    assert "A Paper About Nothing (Nowhere 2026), https://example.org/dummy" in listing
    assert main(["methods", "dummy"]) == 0
    described = capsys.readouterr().out
    assert "strength: 0.25  (float)\n      How hard the dummy pushes." in described
    assert "dummy/strength/<m>\n      the strength on m" in described and "@article{dummy2026," in described
    assert "Default window: from 0.25 of the steps to 0.75 of the steps" in described
    assert main(["methods", "nothing"]) == 2 and "unknown method 'nothing'" in capsys.readouterr().err
    # The --modulation help.
    assert "'dummy' (Dummy)" in re.sub(r"\s+", " ", build_parser().format_help())
    # A run: the options are checked, the card names and cites it, the console and the plots use its words.
    modalities = ("vision", "audio")
    torch.manual_seed(0)
    model = MultimodalModel.from_encoders({m: encoder_paths[m] for m in modalities}, num_labels=NUM_LABELS)
    with pytest.raises(ValueError, match="not options of 'dummy'; its options: strength"):
        AIMConfig(output_dir=str(tmp_path), modulation="dummy", modulation_kwargs={"alpha": 1.0})
    args = tiny_args(tmp_path / "out", modulation="dummy", modulation_kwargs={"strength": 0.5}, max_steps=2)
    trainer = AIMTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(make_rows(12, modalities)),
        processing_class=MultimodalProcessor({m: processors[m] for m in modalities}),
    )
    trainer.train()
    trainer.create_model_card(output_dir=str(tmp_path / "card"))
    card = (tmp_path / "card" / "README.md").read_text()
    assert "trained with **Dummy (a method registered by a test)**" in card
    assert "from [A Paper About Nothing](https://example.org/dummy)" in card
    assert "| `strength` | 0.5 |" in card
    # Its default window, resolved on the run's 2 steps.
    assert "| `modulation_start` | 0.25 (step 0) |" in card and "| `modulation_end` | 0.75 (step 1) |" in card
    assert "@article{dummy2026," in card and "arXiv:2508.19769" in card  # its citation, then AIM's
    log = next(log for log in trainer.state.log_history if "loss" in log)
    assert "Dummy s audio 1.000" in format_log(log, 1)
    assert set(modulation_curves(trainer.state.log_history)) == {"dummy/strength"}
    assert panel_title("dummy/strength") == "Dummy: strength"


def test_without_the_dummy_the_registry_is_unchanged():
    assert "dummy" not in MODULATIONS and "'dummy'" not in build_parser().format_help()


def test_the_docs_name_every_registered_method():
    """The method lists the README and docs/method.md keep by hand name every registered method,
    and every method but `none` has its page."""
    root = PACKAGE.parent.parent
    readme = re.search(r"^- `modulation`: (.*?)^- ", (root / "README.md").read_text(), re.S | re.M).group(1)
    table_row = re.search(r"^\| `modulation` \|.*$", (root / "docs" / "method.md").read_text(), re.M).group(0)
    for name in MODULATIONS:
        assert f'`"{name}"`' in readme and f'`"{name}"`' in table_row, name
        assert name == "none" or (root / "docs" / "methods" / f"{name}.md").is_file(), name
