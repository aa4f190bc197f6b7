"""The model card (`README.md`) that [`AIMTrainer`] writes, with its plots, next to every saved model.

The card is rendered from `templates/aim_model_card.md` through `huggingface_hub.ModelCard`: the Hub
metadata (base encoders as `base_model`, dataset, tags) in its YAML header, then the encoders, the
results with the accuracy and modulation plots, a usage snippet with the Auto classes, the method's
and the training's hyperparameters, the framework versions and the citations.
"""

from __future__ import annotations

import dataclasses
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers.modelcard import extract_hyperparameters_from_trainer

from .modulation.aim import AIM
from .modulation.base import Modulation
from .modulation.mechanics import resolve_step
from .modulation.composite import members_of
from .training_args import AIMConfig

if TYPE_CHECKING:
    from transformers import Trainer

MODEL_CARD_NAME = "README.md"
TEMPLATE_PATH = Path(__file__).parent / "templates" / "aim_model_card.md"

_FRAMEWORKS = ("aim_hf", "transformers", "torch", "datasets", "accelerate", "huggingface_hub")


def hub_id(name: str | None) -> str | None:
    """`name` if it reads as a Hub repo id (not an existing local path), else `None`."""
    if not name or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _format(value: float) -> str:
    return f"{value:.4f}"


# The Trainer's metric prefixes of the splits aim-hf evaluates on, as the card names them.
_SPLIT_TITLES = {"eval": "Validation split", "test": "Test split"}


def _evaluation_prefixes(log: dict[str, Any]) -> list[str]:
    """The metric prefixes of the evaluations in `log` (`eval`, `test`, ...): the keys `<prefix>_accuracy`
    other than a probe's (`<prefix>_<modality>_probe_accuracy`) and the training probes' (`probe_accuracy/...`)."""
    return [
        key.removesuffix("_accuracy")
        for key in log
        if key.endswith("_accuracy") and "/" not in key and not key.endswith("_probe_accuracy")
    ]


def _results(log_history: list[dict[str, Any]], modalities: list[str]) -> dict[str, Any]:
    """Per evaluated split (validation, then test, then any other prefix), its last evaluation's
    fused and per-probe accuracy / F1; and the last training interval's probe accuracies."""
    last: dict[str, dict[str, Any]] = {}
    for log in log_history:
        for prefix in _evaluation_prefixes(log):
            last[prefix] = log
    order = [p for p in _SPLIT_TITLES if p in last] + [p for p in last if p not in _SPLIT_TITLES]
    evaluations = []
    for prefix in order:
        log, rows = last[prefix], []
        for name, key in [("fused", f"{prefix}_")] + [(f"{m} probe", f"{prefix}_{m}_probe_") for m in modalities]:
            if f"{key}accuracy" in log:
                f1 = log.get(f"{key}f1")
                f1 = "–" if f1 is None else _format(f1)
                rows.append({"name": name, "accuracy": _format(log[f"{key}accuracy"]), "f1": f1})
        title = _SPLIT_TITLES.get(prefix, f"Evaluation `{prefix}`")
        evaluations.append({"title": title, "step": log.get("step"), "rows": rows})
    results: dict[str, Any] = {"evaluations": evaluations, "train_rows": [], "train_step": None}
    trains = [log for log in log_history if any(f"probe_accuracy/{m}" in log for m in modalities)]
    if trains:
        last_train = trains[-1]
        results["train_step"] = last_train.get("step")
        results["train_rows"] = [
            {"name": f"{m} probe", "accuracy": _format(last_train[f"probe_accuracy/{m}"])}
            for m in modalities
            if f"probe_accuracy/{m}" in last_train
        ]
    return results


def _training_hyperparameters(trainer: Trainer) -> dict[str, Any]:
    """transformers' list of the training hyperparameters, with a warm-up under 1 shown as what it is:
    a ratio of the training steps (and the steps it gave)."""
    values = extract_hyperparameters_from_trainer(trainer)
    warmup = trainer.args.warmup_steps
    if "lr_scheduler_warmup_steps" not in values or not 0 < warmup < 1:
        return values
    ratio = f"{warmup}"
    if trainer.state.max_steps:
        ratio += f" ({trainer.args.get_warmup_steps(trainer.state.max_steps)} of {trainer.state.max_steps} steps)"
    shown = {}
    for key, value in values.items():  # in the same place of the list, under the name of what it is
        if key == "lr_scheduler_warmup_steps":
            key, value = "lr_scheduler_warmup_ratio", ratio
        shown[key] = value
    return shown


# The modulation object's attribute that holds the value a schedule field resolves to (its default).
_RESOLVED = {"modulation_start": "start", "modulation_end": "end"}


def _method_hyperparameters(trainer: Trainer, modulation: Modulation) -> dict[str, Any]:
    """Each method's hyperparameters (`_member_hyperparameters`); a composition's as
    `<method>.<option>`, member by member."""
    members = members_of(modulation)
    return {
        (f"{member.name}.{key}" if len(members) > 1 else key): value
        for member in members
        for key, value in _member_hyperparameters(trainer, member).items()
    }


def _member_hyperparameters(trainer: Trainer, modulation: Modulation) -> dict[str, Any]:
    """The modulation schedule and the method's own options (its `Config`, given in
    `modulation_kwargs`), with the values the run used: an option that is `None` or `auto` shows
    what that resolved to (the modulation object's attribute of the same name, where it has one)."""
    args = trainer.args
    given_used: dict[str, tuple[Any, Any]] = {}
    for name in ["modulation_start", "modulation_end"]:
        given = getattr(args, name)
        given_used[name] = (given, getattr(modulation, _RESOLVED[name]) if name in _RESOLVED else given)
    for f in dataclasses.fields(modulation.config):
        given = getattr(modulation.config, f.name)
        # Only these stand for another value; an attribute of another option's name may be state
        # (AIM's `prototypes`).
        resolves = given is None or given == "auto"
        given_used[f.name] = (given, getattr(modulation, f.name, given) if resolves else given)
    values: dict[str, Any] = {}
    for name, (given, used) in given_used.items():
        shown = used
        if name in ("modulation_start", "modulation_end") and used is None:
            shown = "never"
        elif name in ("modulation_start", "modulation_end") and used < 1:  # a fraction of the steps
            shown = f"{used} (step {resolve_step(used, trainer.state.max_steps)})"
        values[name] = f"{shown} (`{given}`)" if given is not None and given != used else shown
    return values


def _method(cls: type[Modulation]) -> dict[str, Any]:
    """What the card says about the method: its name, its title and its paper (as it declares them)."""
    return {"name": cls.name, "title": cls.title or cls.name, "paper": cls.paper}


def _citations(*classes: type[Modulation]) -> list[str]:
    """The card's BibTeX entries: each method's own (a composition's members in order), then AIM's, the
    method this library is built around."""
    return list(dict.fromkeys(c for c in (*(cls.citation for cls in classes), AIM.citation) if c))


def _source(name_or_path: str) -> str:
    """Where an encoder's weights came from, in the card's words."""
    if hub_id(name_or_path):
        return f"[{name_or_path}](https://huggingface.co/{name_or_path})"
    return f"`{name_or_path}` (local folder)" if name_or_path else "built from a config (random init)"


def _encoders(trainer: Trainer) -> list[dict[str, Any]]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    processor = trainer.processing_class
    kinds = getattr(processor, "kinds", {})
    collator = getattr(trainer.data_collator, "collator", trainer.data_collator)  # BlankModalities wraps one
    columns = getattr(collator, "columns", {})
    encoders = []
    for m in model.modalities:
        config = model.config.encoder_configs[m]
        kind = kinds.get(m)
        encoders.append(
            {
                "modality": m,
                "hub_id": hub_id(config.name_or_path),
                "source": _source(config.name_or_path),
                "architecture": (config.architectures or [type(model.encoders[m]).__name__])[0],
                "depth_groups": ", ".join(
                    str(g.start) if len(g) == 1 else f"{g.start}–{g.stop - 1}" for g in model.depth_groups(m)
                ),
                "processor": type(processor[m]).__name__ if kind else "–",
                "column": columns.get(m, m),
            }
        )
    return encoders


def _dataset_loader(dataset: str | None) -> str | None:
    """The `load_dataset(...)` call that gives the training rows of `dataset`, as the usage snippet
    runs it: a Hub dataset's train split, or a local csv / json / parquet file's rows; else None."""
    from .data.loading import file_builder

    builder = file_builder(dataset) if dataset else None
    if builder is not None:
        return f'load_dataset("{builder}", data_files={dataset!r}, split="train")'
    if dataset and "/" in dataset and hub_id(dataset) is not None:
        return f'load_dataset("{dataset}", split="train")'
    return None


def _labels(id2label: dict[int, str], limit: int = 12) -> str:
    names = [str(id2label[i]) for i in sorted(id2label)]
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _versions() -> dict[str, str]:
    found = {}
    for name in _FRAMEWORKS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def build_model_card(
    trainer: Trainer,
    modulation: Modulation,
    output_dir: str | os.PathLike,
    model_name: str | None = None,
    repo_id: str | None = None,
    dataset: str | None = None,
    tags: str | list[str] | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of `trainer`'s model and write its plots (`accuracy.png`,
    `modulation.png`) into `output_dir`, where the card links them.

    Args:
        trainer: the trainer (an [`AIMTrainer`]); its model, arguments (an [`AIMConfig`]), processors and
            `state.log_history` are read.
        modulation: the method the trainer runs (`AIMTrainer.modulation`).
        output_dir: the folder the card will be saved in (the plots are written there now).
        model_name: the card's title (default: the last part of `repo_id`, else the run's `args.output_dir`).
        repo_id: the Hub repo the usage snippet loads (default: `model_name`).
        dataset: the training dataset's name or Hub id (default: the train dataset's `info.dataset_name`).
        tags, license, language: extra Hub metadata.
        template_path: a Jinja template to render instead of the packaged one.
    """
    from .plotting import plot_run  # matplotlib only when a card is written, not on `import aim_hf`

    model = trainer.accelerator.unwrap_model(trainer.model)
    args: AIMConfig = trainer.args
    model_name = model_name or (repo_id or Path(args.output_dir).resolve().name).split("/")[-1]
    if dataset is None:
        dataset = getattr(getattr(trainer.train_dataset, "info", None), "dataset_name", None)
    encoders = _encoders(trainer)
    plots = plot_run(trainer.state.log_history, output_dir)
    members = [type(m) for m in members_of(modulation)]
    method = _method(members[0])
    if len(members) > 1:  # a composition: titled by its members' titles, their papers in the citations
        method = {"name": args.modulation, "title": " + ".join(_method(m)["title"] for m in members), "paper": None}
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    base_models = [e["hub_id"] for e in encoders if e["hub_id"]]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        base_model=base_models or None,
        datasets=[dataset] if hub_id(dataset) else None,
        license=license,
        language=language,
        tags=list(dict.fromkeys(["aim_hf", "multimodal", "balanced-multimodal-learning", *(m.name for m in members), *tags])),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE_PATH),
        model_name=model_name,
        repo_id=repo_id or model_name,
        modalities=model.modalities,
        num_labels=model.config.num_labels,
        labels=_labels(model.config.id2label),
        fusion=model.config.fusion,
        encoders=encoders,
        dataset_name=dataset,
        dataset_is_hub_id="/" in (dataset or "") and hub_id(dataset) is not None,
        dataset_loader=_dataset_loader(dataset),
        method=method,
        method_hyperparameters=_method_hyperparameters(trainer, modulation),
        hyperparameters=_training_hyperparameters(trainer),
        versions=_versions(),
        citations=_citations(*members),
        accuracy_plot=os.path.basename(plots["accuracy"]) if "accuracy" in plots else None,
        modulation_plot=os.path.basename(plots["modulation"]) if "modulation" in plots else None,
        **_results(trainer.state.log_history, model.modalities),
    )


def write_model_card(
    trainer: Trainer, modulation: Modulation, output_dir: str | os.PathLike, **kwargs: Any
) -> str:
    """Render the card (see [`build_model_card`]) and save it as `output_dir/README.md`; returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_CARD_NAME)
    build_model_card(trainer, modulation, output_dir, **kwargs).save(path)
    return path


__all__ = ["build_model_card", "hub_id", "write_model_card"]
