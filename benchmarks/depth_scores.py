"""Do AIM's depth scores rank the modalities as linear probes do? Per modality and depth of a model's
encoders as loaded (before any fine-tuning), the validation accuracy of a linear probe on the pooled
depth output against AIM's depth score with class-mean prototypes, raw and with `center=True`.

    python benchmarks/depth_scores.py --output OUT.json -- --setting emoji \\
        --encoders '{"vision": "enc/mobilenet_v2", "text": "enc/minilm"}' --batch_norm 0.1
    python benchmarks/depth_scores.py --output OUT.json -- --setting strong      # tiny encoders, random init
    python benchmarks/depth_scores.py --quick --output OUT.json                 # seconds: what the test runs

The options after `--` are `aim-hf train`'s: the model and data are built as `aim-hf train` builds
them (`parse_train_args`, `build_trainer`), and the depth outputs are the model's `depth_features`
in eval mode. Per depth:

- `probe`: a logistic regression (scikit-learn, standardised features) fitted on the train split,
  accuracy on the validation split;
- `raw` and `centered`: AIM's score (`aim_hf.modulation.aim.strengths.true_class_score_sum`, `tau`
  0.1) of the validation features against the class means of the train split's normalised features
  (`prototypes="class_mean"`), without and with the train split's mean normalised feature as the
  center;
- `cosine`: the mean pairwise cosine of the pooled outputs (how much one direction dominates them).

Writes `--output` (every value, and per depth whether each score orders the modalities as the
probes do) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from aim_hf.modulation.aim.strengths import true_class_score_sum
from aim_hf.scripts.train import build_trainer, parse_train_args

QUICK = ["--setting", "strong", "--max_train_samples", "64", "--max_eval_samples", "32", "--hidden_size", "16",
         "--num_hidden_layers", "2"]  # fmt: skip
TAU = 0.1


def depth_outputs(model: torch.nn.Module, loader) -> tuple[dict[tuple[str, int], torch.Tensor], torch.Tensor]:
    """Every batch's pooled depth outputs per (modality, depth), in eval mode, and the labels."""
    outputs: dict[tuple[str, int], list[torch.Tensor]] = {}
    labels = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            out = model(**{k: v for k, v in batch.items() if k != "labels"})
            for m, features in out.depth_features.items():
                for d, feature in enumerate(features):
                    outputs.setdefault((m, d), []).append(feature.float().cpu())
            labels.append(batch["labels"].cpu())
    return {key: torch.cat(parts) for key, parts in outputs.items()}, torch.cat(labels)


def measure(train: torch.Tensor, y_train: torch.Tensor, val: torch.Tensor, y_val: torch.Tensor, k: int) -> dict:
    """The probe accuracy, the raw and centered scores and the mean pairwise cosine of one depth."""
    scaler = StandardScaler().fit(train.numpy())
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train.numpy()), y_train.numpy())
    h_train, h_val = F.normalize(train, dim=-1), F.normalize(val, dim=-1)
    means = torch.stack([h_train[y_train == c].mean(0) if (y_train == c).any() else torch.zeros(train.shape[1])
                         for c in range(k)])  # fmt: skip
    n = len(y_val)
    sample = h_val[:256]
    return {
        "probe": float(probe.score(scaler.transform(val.numpy()), y_val.numpy())),
        "raw": true_class_score_sum(h_val, means, y_val, TAU).item() / n,
        "centered": true_class_score_sum(h_val, means, y_val, TAU, h_train.mean(0)).item() / n,
        "cosine": float(((sample @ sample.T).sum() - len(sample)) / (len(sample) * (len(sample) - 1))),
    }


def orders(values: dict[tuple[str, int], dict], key: str) -> dict[int, list[str]]:
    """Per depth, the modalities from the highest `key` down."""
    depths = sorted({d for _, d in values})
    return {d: sorted((m for m, dd in values if dd == d), key=lambda m: -values[m, d][key]) for d in depths}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, train_argv = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="The JSON to write.")
    parser.add_argument("--quick", action="store_true", help="Tiny encoders and data: checks the script, measures nothing.")
    args = parser.parse_args(ours)
    train_argv = [*(QUICK if args.quick else []), *train_argv]
    if not any(a.startswith("--output_dir") for a in train_argv):
        train_argv += ["--output_dir", tempfile.mkdtemp(prefix="depth_scores_")]  # nothing is trained or saved
    trainer, validation, _ = build_trainer(*parse_train_args([*train_argv, "--report_to", "none"]))
    k = trainer.model.config.num_labels
    train, y_train = depth_outputs(trainer.model, trainer.get_train_dataloader())
    val, y_val = depth_outputs(trainer.model, trainer.get_eval_dataloader(validation))
    values = {key: measure(train[key], y_train, val[key], y_val, k) for key in sorted(train)}
    by_probe = orders(values, "probe")
    agree = {kind: {d: order == by_probe[d] for d, order in orders(values, kind).items()} for kind in ("raw", "centered")}
    print("| modality | depth | probe | raw score | centered score | mean pairwise cosine |\n|---|---|---|---|---|---|")
    for (m, d), v in values.items():
        print(f"| {m} | {d} | {v['probe']:.3f} | {v['raw']:.3f} | {v['centered']:.3f} | {v['cosine']:.3f} |")
    for kind, per_depth in agree.items():
        print(f"{kind}: orders the modalities as the probes do at depths {[d for d, ok in per_depth.items() if ok]} "
              f"of {list(per_depth)}")  # fmt: skip
    record = {
        "train_argv": train_argv,
        "chance": 1.0 / k,
        "values": [{"modality": m, "depth": d, **v} for (m, d), v in values.items()],
        "agrees_with_probes": {kind: {str(d): ok for d, ok in per_depth.items()} for kind, per_depth in agree.items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
