"""The model card and plots AIMTrainer writes with every save, and the names its metrics reach the
Trainer integrations under."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from PIL import Image

import aim_hf
from aim_hf import AIMConfig, AIMTrainer, MultimodalModel, MultimodalProcessor
from aim_hf.modulation import MODULATIONS
from aim_hf.plotting import accuracy_curves, load_log_history, modulation_curves, panel_title, plot_run
from tiny import NUM_LABELS, make_rows

MODALITIES = ("vision", "text")
VISION_HUB_ID = "google/vit-base-patch16-224-in21k"


def _trainer(encoder_paths, processors, output_dir, modulation="ogm_ge", **overrides) -> AIMTrainer:
    torch.manual_seed(0)
    model = MultimodalModel.from_encoders({m: encoder_paths[m] for m in MODALITIES}, num_labels=NUM_LABELS)
    args = dict(
        output_dir=str(output_dir), modulation=modulation, max_steps=2, per_device_train_batch_size=4,
        learning_rate=1e-3, logging_steps=1, save_strategy="steps", save_steps=2, eval_strategy="steps",
        eval_steps=2, use_cpu=True, report_to="none", disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    args.update(overrides)
    return AIMTrainer(
        model=model,
        args=AIMConfig(**args),
        train_dataset=Dataset.from_list(make_rows(16, MODALITIES)),
        eval_dataset=Dataset.from_list(make_rows(6, MODALITIES, seed=1)),
        processing_class=MultimodalProcessor({m: processors[m] for m in MODALITIES}),
    )


@pytest.fixture(scope="module")
def trained(encoder_paths, processors, tmp_path_factory):
    """A trained tiny OGM-GE run whose vision encoder reads as loaded from the Hub, saved to `final`."""
    out = tmp_path_factory.mktemp("card_run")
    trainer = _trainer(encoder_paths, processors, out, save_steps=1, eval_steps=1)
    trainer.model.config.encoder_configs["vision"]._name_or_path = VISION_HUB_ID
    trainer.train()
    trainer.save_model(str(out / "final"))
    trainer.create_model_card(dataset="aim-user/synthetic", license="mit", output_dir=str(out / "final"))
    return trainer, out


def test_every_save_gets_a_card_and_plots(trained):
    trainer, out = trained
    for folder in ("checkpoint-1", "checkpoint-2", "final"):
        for name in ("README.md", "accuracy.png", "modulation.png"):
            assert (out / folder / name).is_file(), f"{folder}/{name} is missing"
        with Image.open(out / folder / "accuracy.png") as image:
            assert image.format == "PNG" and image.width > 100
    # The checkpoint's card shows that checkpoint's evaluation, not the end of training.
    first_eval = next(log for log in trainer.state.log_history if "eval_accuracy" in log)
    assert first_eval["step"] == 1
    assert "Validation split, step 1:" in (out / "checkpoint-1" / "README.md").read_text()


def test_card_content(trained):
    trainer, out = trained
    card = ModelCard.load(out / "final" / "README.md")
    data, text = card.data, card.text
    # Hub metadata: only the encoder loaded from a Hub id is a base model; the other is a local folder.
    assert data.base_model == [VISION_HUB_ID]
    assert data.datasets == ["aim-user/synthetic"] and data.license == "mit"
    assert data.library_name == "transformers" and "ogm_ge" in data.tags
    # The final metrics, as logged: fused and per-modality.
    last_eval = [log for log in trainer.state.log_history if "eval_accuracy" in log][-1]
    assert f"| fused | {last_eval['eval_accuracy']:.4f} | {last_eval['eval_f1']:.4f} |" in text
    for m in MODALITIES:
        assert f"| {m} probe | {last_eval[f'eval_{m}_probe_accuracy']:.4f} |" in text
    assert "![Fused and per-modality accuracy](accuracy.png)" in text and "](modulation.png)" in text
    # Where each encoder's weights came from: the Hub id, the local folder, never "pretrained" blindly.
    assert f"| vision | `ViTModel` | [{VISION_HUB_ID}](https://huggingface.co/{VISION_HUB_ID}) |" in text
    assert f"| text | `BertModel` | `{trainer.model.config.encoder_configs['text'].name_or_path}` (local folder) |" in text
    # Method and training hyperparameters, with the values used (defaults and `auto` resolved), versions, citation.
    config = trainer.modulation.config  # OGM-GE's options (modulation_kwargs)
    assert f"| `alpha` | {config.alpha} |" in text and f"| `noise` | {config.noise} |" in text
    assert "method default" not in text and config.noise_scale is None and config.mode == "auto"
    mode = trainer.modulation.mode  # AdamW: "update"
    assert f"| `mode` | {mode} (`auto`) |" in text and f"| `noise_scale` | {trainer.modulation.noise_scale} |" in text
    # The schedule the run used: OGM-GE's own default window (its reference's), ending at half of the 2 steps.
    assert "| `modulation_start` | 0.0 (step 0) |" in text and "| `modulation_end` | 0.5 (step 1) |" in text
    assert f"- learning_rate: {trainer.args.learning_rate}" in text
    import transformers

    assert f"- transformers: {transformers.__version__}" in text
    assert "arXiv:2508.19769" in text and "Shen, Shu and Chen, C. L. Philip and Zhang, Tong" in text


def test_card_usage_snippet_runs(trained, monkeypatch):
    """The card's usage code, pointed at the saved folder, loads the model and classifies."""
    _, out = trained
    text = (out / "final" / "README.md").read_text()
    code = re.search(r"## Usage\n.*?```python\n(.*?)```", text, re.S).group(1)
    code = re.sub(r'repo_id = ".*"', f'repo_id = r"{out / "final"}"', code)
    # The training data is a Hub dataset here: the snippet loads its first row; offline, it is given.
    load = 'example = load_dataset("aim-user/synthetic", split="train")[0]'
    assert load in code
    code = code.replace(load, "")
    namespace = {"example": make_rows(1, MODALITIES)[0]}  # a training row: {"vision": image, "text": str}
    monkeypatch.setattr("builtins.print", lambda *a, **k: namespace.setdefault("printed", a))
    exec(compile(code, "model_card_usage", "exec"), namespace)
    assert namespace["logits"].shape == (1, NUM_LABELS)
    assert namespace["printed"][0] in namespace["model"].config.id2label.values()


def test_card_has_a_table_per_split_and_the_warmup_ratio(encoder_paths, processors, tmp_path):
    """The test set's results are on the card beside the validation set's, each table naming its split;
    a warm-up under 1 (a ratio of the steps) is shown as a ratio."""
    trainer = _trainer(encoder_paths, processors, tmp_path / "out", save_strategy="no", warmup_steps=0.5)
    trainer.train()
    validation = trainer.evaluate()
    test = trainer.evaluate(Dataset.from_list(make_rows(6, MODALITIES, seed=2)), metric_key_prefix="test")
    trainer.save_model(str(tmp_path / "final"))
    text = (tmp_path / "final" / "README.md").read_text()
    results = text[text.index("## Results"):text.index("## Usage")]
    assert results.index("Validation split, step 2:") < results.index("Test split, step 2:")
    tables = results.split("Test split, step 2:")
    for metrics, prefix, table in ((validation, "eval", tables[0]), (test, "test", tables[1])):
        assert f"| fused | {metrics[f'{prefix}_accuracy']:.4f} | {metrics[f'{prefix}_f1']:.4f} |" in table
        for m in MODALITIES:
            assert f"| {m} probe | {metrics[f'{prefix}_{m}_probe_accuracy']:.4f} |" in table
    assert "Evaluation set" not in text
    assert "- lr_scheduler_warmup_ratio: 0.5 (1 of 2 steps)" in text and "warmup_steps" not in text


def test_plots_from_trainer_state(trained, tmp_path):
    trainer, out = trained
    log_history = load_log_history(out / "checkpoint-2")  # the folder's trainer_state.json
    assert log_history == load_log_history(out / "checkpoint-2" / "trainer_state.json")
    written = plot_run(out / "checkpoint-2", tmp_path)
    assert set(written) == {"accuracy", "modulation"}
    curves = accuracy_curves(log_history)
    evals = [log for log in log_history if "eval_accuracy" in log]
    assert curves["fused (eval)"] == [(log["step"], log["eval_accuracy"]) for log in evals]
    trains = [log for log in log_history if "probe_accuracy/text" in log]
    assert curves["text probe (train)"] == [(log["step"], log["probe_accuracy/text"]) for log in trains]
    panels = modulation_curves(log_history)
    assert set(panels["ogm/coeff"]) == set(MODALITIES)
    assert panels["ogm/coeff"]["vision"] == [(log["step"], log["ogm/coeff/vision"]) for log in trains]


def test_modulation_curves_group_aim_metrics_per_modality_and_depth():
    log_history = [
        {"step": s, "loss": 1.0, "loss/probe/vision": 1.0, "probe_accuracy/vision": 0.5, "aim/active": 1.0,
         **{f"aim/lambda/{m}/depth_{d}": 0.1 * d + s for m in ("vision", "audio") for d in range(3)}}
        for s in (1, 2)
    ]
    panels = modulation_curves(log_history)
    # No trainer loss / accuracy, and no panel for the `aim/active` flag that never changed.
    assert set(panels) == {"aim/lambda/vision", "aim/lambda/audio"}
    assert list(panels["aim/lambda/audio"]) == ["depth_0", "depth_1", "depth_2"]
    assert panels["aim/lambda/audio"]["depth_2"] == [(1, pytest.approx(1.2)), (2, pytest.approx(2.2))]


def test_modulation_panels_have_titles_in_words(tmp_path):
    assert panel_title("aim/lambda/vision") == "AIM: modulation strength λ (vision)"
    assert panel_title("ogm/coeff") == "OGM-GE: gradient coefficient k"
    # A flag that does change keeps its line.
    log_history = [{"step": s, "aim/active": float(s > 1), "aim/aux_loss": 0.5} for s in (1, 2)]
    assert set(modulation_curves(log_history)["aim"]) == {"active", "aux_loss"}


def test_card_from_config_encoders_says_so(encoder_paths, processors, tmp_path):
    trainer = _trainer(encoder_paths, processors, tmp_path / "out")
    for m in MODALITIES:  # as an encoder built with AutoModel.from_config reads
        trainer.model.config.encoder_configs[m]._name_or_path = ""
    trainer.save_model(str(tmp_path / "untrained"))
    text = (tmp_path / "untrained" / "README.md").read_text()
    assert text.count("| built from a config (random init) |") == 2 and "pretrained encoder" not in text


def test_card_before_training_has_no_broken_images(encoder_paths, processors, tmp_path):
    trainer = _trainer(encoder_paths, processors, tmp_path / "out")
    trainer.save_model(str(tmp_path / "untrained"))
    text = (tmp_path / "untrained" / "README.md").read_text()
    assert "No metrics were logged yet." in text and ".png)" not in text
    assert not list((tmp_path / "untrained").glob("*.png"))


@pytest.mark.parametrize("modulation", sorted(set(MODULATIONS) - {"none"}))
def test_metric_names_reach_tensorboard(encoder_paths, processors, tmp_path, monkeypatch, modulation):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = _trainer(
        encoder_paths, processors, tmp_path / "out", modulation=modulation, save_strategy="no",
        eval_steps=2, report_to=["tensorboard"], modulation_start=0,
    )
    trainer.train()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    model = trainer.model
    expected = {f"train/probe_accuracy/{m}" for m in MODALITIES} | {f"train/loss/probe/{m}" for m in MODALITIES}
    expected |= {"train/loss/fused", "eval/accuracy"} | {f"eval/{m}_probe_accuracy" for m in MODALITIES}
    if modulation == "ogm_ge":
        expected |= {f"train/ogm/coeff/{m}" for m in MODALITIES}
    if modulation == "aim":
        expected |= {
            f"train/aim/lambda/{m}/depth_{d}" for m in MODALITIES for d in range(len(model.depth_groups(m)))
        }
    assert expected <= tags, f"missing from TensorBoard: {sorted(expected - tags)}"
    # Every metric the trainer logged reached TensorBoard under train/<name>.
    logged = {k for log in trainer.state.log_history if "loss" in log for k in log if k != "step"}
    assert {f"train/{k}" for k in logged} <= tags


def test_model_card_does_not_import_the_trainer():
    """The trainer imports the model card, never the other way round (not even for type hints)."""
    tree = ast.parse(Path(aim_hf.model_card.__file__).read_text())
    imported = set()  # every module and name imported anywhere in the file, as absolute dotted names
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = f"aim_hf.{node.module or ''}".rstrip(".") if node.level else node.module
            imported |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    assert "aim_hf.modulation.base" in imported  # relative imports resolved
    assert not [name for name in imported if name == "aim_hf.trainer" or name.startswith("aim_hf.trainer.")]
