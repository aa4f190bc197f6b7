"""Why does AIM lower the dominant modality's probe? Measure, over training, where each encoder's
gradient comes from and how big its update is, for `none` and `aim` on the same seeds.

    python benchmarks/aim_hindrance.py --seeds 0 1 2 --every 8          # av_digits at its benchmark plan
    python benchmarks/aim_hindrance.py --setting strong --seeds 0 --output-dir OUT
    python benchmarks/aim_hindrance.py --logs benchmarks/results/strong_adamw.json   # logged metrics only
    python benchmarks/aim_hindrance.py --quick --check-identical        # seconds: what the test runs

Each run is built exactly as `aim-hf train` builds it (`parse_train_args`, `build_trainer`, `run`),
with the plan of `benchmarks/av_digits.py` for the setting (`PLANS` below) and `--save_strategy no`
(checkpoints do not change the weights). Every `--every` optimizer steps (and at the first) the instrumentation records,
per encoder (each modality's `model.encoders[m]`):

- `fused`: the norm of the gradient of the model's own loss (the fused cross-entropy; the probes see
  detached features, so nothing else of that loss reaches an encoder);
- `extra`: the norm of the gradient of what the method adds to it (AIM's `beta_aux * L_aux`; 0 under
  `none`), and `total`, their sum; all by `torch.autograd.grad(..., retain_graph=True)` on the graph
  the step builds anyway, so that no `.grad`, random draw or weight changes (`--check-identical`
  trains an uninstrumented twin and compares the final weights bit for bit);
- `grad`: the norm of the gradient the optimizer gets (after clipping to `max_grad_norm`);
- `update`: the norm of the parameter change the optimizer step makes (what AdamW does with it).

Writes into `--output-dir`: `hindrance.json` (per method and seed: the recorded steps, AIM's logged
`aim/*` metrics and every evaluation's probes and fused accuracy from the log history, and the final
test metrics) and the plots `gradients.png` (gradient norms, the dominant encoder's share, update
norms, the clipping factor, the pre-clipping gradient norm) and `modulation.png` (AIM's strengths and
masked fractions, the validation probes). `summary` in the JSON: the test probe and fused differences
`aim - none` (paired by seed, 95% t-interval), and per third of training the recorded and the logged
quantities. `--from-json` redoes the summary and plots of a written `hindrance.json`; `--logs` does
the logged part for a `benchmarks/av_digits.py` result JSON (no training).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from aim_hf.scripts.train import build_trainer, parse_train_args, run
from aim_hf.stats import paired_interval

# benchmarks/av_digits.py's plans (AdamW) of the settings measured here.
_SHARED = ["--per_device_train_batch_size", "64", "--eval_strategy", "steps", "--learning_rate", "3e-3",
           "--eval_steps", "96"]  # fmt: skip
PLANS = {
    "av_digits": ["--setting", "av_digits", *_SHARED, "--num_train_epochs", "30"],
    "strong": ["--setting", "strong", *_SHARED, "--num_train_epochs", "40"],
}
QUICK = ["--setting", "av_digits", "--per_device_train_batch_size", "16", "--max_steps", "12",
         "--max_train_samples", "192", "--eval_strategy", "steps", "--eval_steps", "6", "--logging_steps", "2",
         "--learning_rate", "3e-3", "--modulation_start", "0"]  # fmt: skip
# --quick, AIM's options: its auxiliary pass runs within a few steps (scores from class means, strong DAM).
QUICK_AIM = {"prototypes": "class_mean", "alpha": 5.0, "dam_cap": "none"}
COMMON = ["--disable_tqdm", "true", "--save_strategy", "no"]
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "aim_hindrance"


def _norms(grads: Sequence[torch.Tensor | None]) -> float:
    """The L2 norm of a list of gradients (None: no gradient, counted as 0)."""
    present = [g.detach().float() for g in grads if g is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in present]))) if present else 0.0


class GradientRecorder(TrainerCallback):
    """Records, every `every` optimizer steps, per encoder: the gradient norms of the model's loss and
    of the method's added loss (set by `measure_loss`), of the gradient the optimizer gets, and of the
    update it makes. Read-only: it never writes a `.grad` or a weight."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.records: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None
        self._before: dict[str, list[torch.Tensor]] | None = None
        self.encoders: dict[str, list[torch.nn.Parameter]] = {}

    def wants(self, step: int) -> bool:
        """Whether optimizer step `step` (0-based, the Trainer's `global_step` during it) is recorded."""
        return step % self.every == 0

    def measure_loss(self, step: int, model_loss: torch.Tensor, total_loss: torch.Tensor) -> None:
        """The gradient norms per encoder of `model_loss`, of `total_loss - model_loss` (exactly the
        method's added term: the shared part's gradients cancel to 0 at that node) and of `total_loss`
        (before clipping). One micro-batch per optimizer step (`train` checks it)."""
        params = [p for ps in self.encoders.values() for p in ps]
        fused = torch.autograd.grad(model_loss, params, retain_graph=True, allow_unused=True)
        extra = (
            torch.autograd.grad(total_loss - model_loss, params, retain_graph=True, allow_unused=True)
            if total_loss is not model_loss
            else [None] * len(params)
        )
        entry: dict[str, Any] = {"step": step}
        start = 0
        for m, ps in self.encoders.items():
            f, e = fused[start : start + len(ps)], extra[start : start + len(ps)]
            start += len(ps)
            entry[f"fused/{m}"] = _norms(f)
            entry[f"extra/{m}"] = _norms(e)
            entry[f"total/{m}"] = _norms([a if b is None else b if a is None else a + b for a, b in zip(f, e)])
        self._current = entry

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.wants(state.global_step) or self._current is None:
            return
        for m, params in self.encoders.items():
            self._current[f"grad/{m}"] = _norms([p.grad for p in params])
        self._before = {m: [p.detach().clone() for p in params] for m, params in self.encoders.items()}

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._before is None:
            return
        for m, params in self.encoders.items():
            self._current[f"update/{m}"] = _norms([p.detach() - b for p, b in zip(params, self._before[m])])
            self._current[f"weight/{m}"] = _norms([p.detach() for p in params])
        self.records.append(self._current)
        self._current, self._before = None, None


def instrument(trainer: Any, recorder: GradientRecorder) -> None:
    """Make `trainer.compute_loss` hand each recorded training step's losses to `recorder`; the loss
    it returns, and so the update, is unchanged."""
    model = trainer.model
    recorder.encoders = {m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in model.modalities}
    original = trainer.compute_loss

    def compute_loss(model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None):
        loss, outputs = original(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        step = trainer.state.global_step
        if model.training and recorder.wants(step):
            recorder.measure_loss(step, outputs.loss, loss)
        return (loss, outputs) if return_outputs else loss

    trainer.compute_loss = compute_loss


def train(method: str, seed: int, options: Sequence[str], output_dir: Path, every: int | None) -> dict[str, Any]:
    """One run of `method` on `seed`; `every` None: uninstrumented. Returns the records, the log
    history, the final metrics and the final weights (CPU tensors)."""
    argv = [*options, *COMMON, "--modulation", method, "--seed", str(seed), "--output_dir", str(output_dir)]
    recorder = GradientRecorder(every) if every else None
    model_args, data_args, training_args = parse_train_args(argv)
    if training_args.gradient_accumulation_steps != 1:
        raise ValueError("aim_hindrance records one micro-batch per optimizer step; drop --gradient_accumulation_steps")
    trainer, validation, test = build_trainer(
        model_args, data_args, training_args, callbacks=[recorder] if recorder else None
    )
    if recorder:
        instrument(trainer, recorder)
    metrics = run(trainer, validation, test)
    weights = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    return {
        "argv": argv,
        "records": recorder.records if recorder else [],
        "log_history": trainer.state.log_history,
        "metrics": metrics,
        "weights": weights,
    }


def fingerprint(weights: dict[str, torch.Tensor]) -> str:
    """A SHA-256 of a state dict's tensors (sorted by name), to compare runs across processes."""
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(weights[key].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same tensors bit for bit."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


PHASES = ("first third", "second third", "last third")


def phases(records: Sequence[dict[str, Any]], dominant: str, weak: str) -> dict[str, dict[str, float]]:
    """Means over each third of training of: the gradient norms into each encoder (the model's loss,
    the method's added loss), the dominant encoder's share of the model loss's encoder gradient
    (`|g_dom| / (|g_dom| + |g_weak|)`), the clipping factor (the optimizer's gradient over the
    measured one) and the update norm of each encoder."""
    values = {
        "fused/dominant": [r[f"fused/{dominant}"] for r in records],
        "fused/weak": [r[f"fused/{weak}"] for r in records],
        "extra/dominant": [r[f"extra/{dominant}"] for r in records],
        "extra/weak": [r[f"extra/{weak}"] for r in records],
        "share/dominant": [r[f"fused/{dominant}"] / (r[f"fused/{dominant}"] + r[f"fused/{weak}"]) for r in records],
        "clip": [r[f"grad/{weak}"] / r[f"total/{weak}"] for r in records],
        "update/dominant": [r[f"update/{dominant}"] for r in records],
        "update/weak": [r[f"update/{weak}"] for r in records],
    }
    n = len(records)
    bounds = [(i * n // 3, (i + 1) * n // 3) for i in range(3)]
    return {name: {key: statistics.fmean(v[a:b]) for key, v in values.items()} for name, (a, b) in zip(PHASES, bounds)}


def logged_phases(log_history: Sequence[dict[str, Any]], prefixes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Means over each third of training (by step) of the logged training metrics whose names start
    with one of `prefixes` (e.g. the pre-clipping `grad_norm`, `loss/fused`, `aim/lambda/`)."""
    entries = [e for e in log_history if "loss" in e and "step" in e]
    last = max(e["step"] for e in entries)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(PHASES):
        part = [e for e in entries if i * last / 3 < e["step"] <= (i + 1) * last / 3]
        keys = sorted({k for e in part for k in e if k.startswith(tuple(prefixes))})
        out[name] = {k: statistics.fmean(e[k] for e in part if k in e) for k in keys}
    return out


def probe_gaps(runs: dict[str, dict[int, dict[str, Any]]], modality: str) -> list[tuple[int, float]]:
    """Per evaluation step, `aim - none` in `modality`'s validation probe accuracy (points, mean over seeds)."""
    _, none = _series(runs["none"], f"eval_{modality}_probe_accuracy", "log_history")
    steps, aim = _series(runs["aim"], f"eval_{modality}_probe_accuracy", "log_history")
    return [(s, 100 * (a - b)) for s, a, b in zip(steps, aim, none)]


LOGGED = ("grad_norm", "loss/fused", "probe_accuracy/", "aim/lambda/", "aim/masked_fraction/", "aim/aux_loss")


def summarize(results: dict[str, dict[int, dict[str, Any]]], modalities: Sequence[str]) -> dict[str, Any]:
    """Per modality, `aim - none` in test probe accuracy and fused accuracy (points, paired by seed, 95%
    t-interval); the dominant modality is the one with the higher probe under `none`."""
    seeds = sorted(results["none"])
    probe = {
        meth: {m: [results[meth][s]["metrics"][f"test_{m}_probe_accuracy"] for s in seeds] for m in modalities}
        for meth in results
    }
    none_means = {m: statistics.fmean(probe["none"][m]) for m in modalities}
    dominant = max(modalities, key=none_means.get)
    summary: dict[str, Any] = {"seeds": seeds, "dominant": dominant, "probe": probe, "differences": {}}
    fused = {meth: [results[meth][s]["metrics"]["test_accuracy"] for s in seeds] for meth in results}
    summary["fused"] = fused
    weak = next(m for m in modalities if m != dominant)
    summary["phases"] = {
        meth: {s: phases(results[meth][s]["records"], dominant, weak) for s in seeds}
        for meth in results
        if all(results[meth][s].get("records") for s in seeds)
    }
    summary["logged"] = {
        meth: {s: logged_phases(results[meth][s]["log_history"], LOGGED) for s in seeds} for meth in results
    }
    if "aim" in results:
        summary["validation_probe_gap"] = {m: probe_gaps(results, m) for m in modalities}
    for meth in results:
        if meth == "none":
            continue
        diffs = {f"{m} probe": paired_interval(probe[meth][m], probe["none"][m]) for m in modalities}
        diffs["fused"] = paired_interval(fused[meth], fused["none"])
        summary["differences"][meth] = {k: [100 * x for x in v] for k, v in diffs.items()}
    return summary


def _series(runs: dict[int, dict[str, Any]], key: str, source: str = "records") -> tuple[list[int], list[float]]:
    """`key` over the steps where every seed has it, mean over seeds (`source`: `records`, or
    `log_history` for logged metrics)."""
    per_seed = [{e["step"]: e[key] for e in run[source] if key in e} for run in runs.values()]
    steps = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
    return steps, [statistics.fmean(d[s] for d in per_seed) for s in steps]


def _smooth(values: list[float], width: int = 5) -> list[float]:
    """A centred moving mean (the recorded norms jump from batch to batch)."""
    half = width // 2
    return [statistics.fmean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]


COLORS = {"none": "tab:gray", "aim": "tab:red"}


def plot_gradients(runs: dict[str, dict[int, dict[str, Any]]], dom: str, weak: str, path: Path) -> None:
    """Gradient norms into each encoder by source, the dominant encoder's share, the update norms, the
    clipping factor and the logged pre-clipping gradient norm over training (means over seeds, smoothed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = COLORS
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for meth, seeds in runs.items():
        c = colors.get(meth)
        for ax, m in ((axes[0, 0], dom), (axes[0, 1], weak)):
            x, y = _series(seeds, f"fused/{m}")
            ax.plot(x, _smooth(y), color=c, label=f"{meth}: fused loss")
            if meth != "none":
                x, y = _series(seeds, f"extra/{m}")
                ax.plot(x, _smooth(y), color=c, ls=":", label=f"{meth}: L_aux")
            ax.set_title(f"gradient norm into the {m} encoder ({'dominant' if m == dom else 'weak'})", fontsize=9)
        x, fd = _series(seeds, f"fused/{dom}")
        _, fw = _series(seeds, f"fused/{weak}")
        axes[1, 0].plot(x, _smooth([a / (a + b) if a + b else 0 for a, b in zip(fd, fw)]), color=c, label=meth)
        for m, ls in ((dom, "-"), (weak, "--")):
            x, y = _series(seeds, f"update/{m}")
            axes[1, 1].plot(x, _smooth(y), color=c, ls=ls, label=f"{meth}: {m}")
        x, grad = _series(seeds, f"grad/{weak}")
        _, total = _series(seeds, f"total/{weak}")
        axes[0, 2].plot(x, _smooth([g / t for g, t in zip(grad, total)]), color=c, label=meth)
        x, y = _series(seeds, "grad_norm", "log_history")
        axes[1, 2].plot(x, y, color=c, label=meth)
    axes[0, 2].set_title("clipping factor (max_grad_norm / whole-model gradient norm)", fontsize=9)
    axes[1, 2].set_title("whole-model gradient norm before clipping (logged)", fontsize=9)
    axes[1, 0].set_title(f"{dom}'s share of the fused loss's encoder gradient norm", fontsize=9)
    axes[1, 1].set_title("norm of the optimizer's update per encoder", fontsize=9)
    _save(fig, axes.flat, path)


def _save(fig: Any, axes: Any, path: Path) -> None:
    """Label each panel's step axis, add its legend, and write the figure to `path`."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_modulation(runs: dict[str, dict[int, dict[str, Any]]], dom: str, weak: str, path: Path) -> None:
    """AIM's logged strengths and masked fractions, and each method's validation probes, over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = COLORS
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    if "aim" in runs:
        keys = sorted({k for run in runs["aim"].values() for e in run["log_history"] for k in e
                       if k.startswith(("aim/lambda/", "aim/masked_fraction/"))})  # fmt: skip
        for key in keys:
            x, y = _series(runs["aim"], key, "log_history")
            ax = axes[0] if "lambda" in key else axes[1]
            ax.plot(x, y, label=key.split("/", 2)[2])
    axes[0].set_title("AIM: DAM strength per depth", fontsize=9)
    axes[1].set_title("AIM: share of units switched off", fontsize=9)
    for meth, seeds in runs.items():
        for m, ls in ((dom, "-"), (weak, "--")):
            x, y = _series(seeds, f"eval_{m}_probe_accuracy", "log_history")
            axes[2].plot(x, y, color=colors.get(meth), ls=ls, label=f"{meth}: {m}")
    axes[2].set_title("validation probe accuracy", fontsize=9)
    _save(fig, axes, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["none", "aim"], help="`none` first: the reference.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--setting", choices=sorted(PLANS), default="av_digits", help="the setting (its benchmark plan)"
    )
    parser.add_argument("--every", type=int, default=8, help="record every this many optimizer steps")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="a tiny budget (seconds), for the tests")
    parser.add_argument(
        "--from-json", type=Path, help="re-summarize and re-plot a written hindrance.json (no training)"
    )
    parser.add_argument("--logs", type=Path,
                        help="summarize a benchmarks/av_digits.py result JSON's logged metrics (no training) into "
                        "OUTPUT_DIR/logged_<its name>.json and .png")  # fmt: skip
    parser.add_argument(
        "--check-identical", action="store_true", help="also train each run uninstrumented; compare the final weights"
    )
    args = parser.parse_args(argv)
    if args.methods[0] != "none":
        raise ValueError(f"--methods must start with the reference `none`, got {args.methods}")
    if args.every < 1:
        raise ValueError(f"--every must be at least 1, got {args.every}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.logs:
        return summarize_logs(args.logs, args.output_dir)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        report["runs"] = {m: {int(s): r for s, r in seeds.items()} for m, seeds in report["runs"].items()}
        return write(report, args.output_dir)
    options = QUICK if args.quick else PLANS[args.setting]
    results: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in args.methods}
    with tempfile.TemporaryDirectory() as work:
        for method in args.methods:
            run_options = [*options, "--modulation_kwargs", json.dumps(QUICK_AIM)] if args.quick and method == "aim" else options
            for seed in args.seeds:
                result = train(method, seed, run_options, Path(work) / f"{method}_{seed}", args.every)
                if args.check_identical:
                    twin = train(method, seed, run_options, Path(work) / f"{method}_{seed}_twin", None)
                    result["identical_to_uninstrumented"] = identical(result["weights"], twin["weights"])
                result["weights_sha256"] = fingerprint(result.pop("weights"))
                results[method][seed] = result
    return write({"plan": options, "every": args.every, "runs": results}, args.output_dir)


def write(report: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Summarize a report's runs, write `hindrance.json` and the plots; returns the report."""
    results = report["runs"]
    first = next(iter(results["none"].values()))["records"][0]
    modalities = sorted({k.split("/", 1)[1] for k in first if "/" in k})
    report["summary"] = summary = summarize(results, modalities)
    (folder / "hindrance.json").write_text(json.dumps(report, indent=1, default=float))
    dom = summary["dominant"]
    weak = next(m for m in modalities if m != dom)
    plot_gradients(results, dom, weak, folder / "gradients.png")
    plot_modulation(results, dom, weak, folder / "modulation.png")
    print(json.dumps(summary["differences"], indent=1))
    return report


def summarize_logs(path: Path, folder: Path) -> dict[str, Any]:
    """The logged metrics of `none` and `aim` in a benchmark result JSON (`runs.<method>`: per seed its
    `seed` and `log_history`), per third of training, and the validation probe gaps; writes
    `logged_<name>.json` and `logged_<name>.png`."""
    record = json.loads(path.read_text())
    runs = {m: {r["seed"]: {"log_history": r["log_history"]} for r in record["runs"][m]} for m in ("none", "aim")}
    probe = record["methods"]
    modalities = sorted(probe["none"]["probe"])
    dom = max(modalities, key=lambda m: statistics.fmean(probe["none"]["probe"][m]))
    weak = next(m for m in modalities if m != dom)
    out = {
        "source": path.name,
        "dominant": dom,
        "test_probe": {meth: probe[meth]["probe"] for meth in runs},
        "seeds": {meth: probe[meth]["seeds"] for meth in runs},
        "logged": {
            meth: {s: logged_phases(r["log_history"], LOGGED) for s, r in seeds.items()} for meth, seeds in runs.items()
        },
        "validation_probe_gap": {m: probe_gaps(runs, m) for m in modalities},
    }  # fmt: skip
    (folder / f"logged_{path.stem}.json").write_text(json.dumps(out, indent=1))
    plot_modulation(runs, dom, weak, folder / f"logged_{path.stem}.png")
    return out


if __name__ == "__main__":
    main()
