"""Calibration of the settings for pretrained encoders (`emoji`, `spoken`) on `none` only.

Runs `aim-hf train` (each in its own child process, at most `--jobs` at a time) on the converted
offline encoders: for each seed, `none` and each modality fine-tuned alone (`--only_modality`);
then reports each modality's suppression gap (its probe under `none` minus the modality alone,
paired by seed, with a 95% t-interval) on the test split, and the validation curves the policy was
chosen on. `--variant NAME` runs a variant of the construction or of the policy (`VARIANTS`) on
`none` only. Writes `OUT/<setting>.json` (every command and per-seed value) and prints a table.

    python -m aim_hf.offline mobilenet_v2 /work/enc/mobilenet_v2 --image_size 64   # once, likewise
    python benchmarks/calibrate_pretrained.py emoji --seeds 0 1 2 --jobs 2          # minilm, whisper_tiny_en
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

ENCODERS = {
    "emoji": {"vision": "mobilenet_v2", "text": "minilm"},
    "spoken": {"vision": "mobilenet_v2", "audio": "whisper_tiny_en"},
}
# The fine-tuning policy of each setting, chosen on `none`'s validation accuracy (docs/settings.md).
POLICY = {
    "emoji": [
        "--num_train_epochs", "4", "--learning_rate", "1e-3",
        "--learning_rate_mapping", '{"vision": 5e-4, "text": 5e-5}', "--batch_norm", "0.1",
    ],
    "spoken": [
        "--num_train_epochs", "2", "--learning_rate", "1e-3",
        "--learning_rate_mapping", '{"vision": 5e-4, "audio": 1e-4}',
        "--freeze", '{"vision": 8, "audio": 2}', "--batch_norm", "0.1",
        "--setting_kwargs", '{"snr_db": [-20.0, -10.0]}',
    ],
}  # fmt: skip
COMMON = ["--modulation", "none", "--per_device_eval_batch_size", "64", "--logging_steps", "10"]
# Variants tried on `none` (options appended to the policy; the last of a repeated option wins).
VARIANTS = {
    "bn_as_loaded": ["--batch_norm", "as_loaded"],
    "bn_momentum_0.1": ["--batch_norm", "0.1"],
    "train_all": ["--freeze", "{}"],
    "epochs_8": ["--num_train_epochs", "8"],
    "mask_0.3": ["--setting_kwargs", '{"mask_fraction": 0.3}'],
    "mask_0.5": ["--setting_kwargs", '{"mask_fraction": 0.5}'],
    "subgroup": ["--setting_kwargs", '{"label_level": "subgroup"}'],
    "image_noise_0.3": ["--image_noise", "0.3"],
    "snr_-10_0": ["--setting_kwargs", '{"snr_db": [-10.0, 0.0]}'],
    "snr_-15_-5": ["--setting_kwargs", '{"snr_db": [-15.0, -5.0]}'],
    "snr_-20_-10": ["--setting_kwargs", '{"snr_db": [-20.0, -10.0]}'],
    "hold_out_voice": ["--setting_kwargs", '{"hold_out": "voice"}'],
}
EVAL_LINE = re.compile(r"\[eval, step (\d+)\] .*?fused acc ([\d.]+) \| probe acc (.*)")


def command(setting: str, enc_root: str, out: Path, seed: int, only: str | None, extra: list[str]) -> list[str]:
    """The `aim-hf train` argv of one run."""
    encoders = {m: os.path.join(enc_root, name) for m, name in ENCODERS[setting].items()}
    argv = ["aim-hf", "train", "--setting", setting, "--encoders", json.dumps(encoders), *COMMON, *POLICY[setting]]
    argv += ["--seed", str(seed), "--dataset_seed", str(seed), "--output_dir", str(out), *extra]
    return argv + (["--only_modality", only] if only else [])


def run(argv: list[str], out: Path) -> dict:
    """Run one command (its log beside its output folder); its final metrics and validation curve."""
    log = out.parent / f"{out.name}.log"
    # Another invocation running the same job (its log still growing): wait for its results.
    while log.is_file() and not (out / "all_results.json").is_file() and time.time() - log.stat().st_mtime < 120:
        time.sleep(10)
    if not (out / "all_results.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    curve = []
    for step, fused, probes in EVAL_LINE.findall(log.read_text().replace("\r", "\n")):
        probe = {m: float(v) for m, v in re.findall(r"(\w+) ([\d.]+)", probes)}
        curve.append({"step": int(step), "fused": float(fused), **{f"{m}_probe": v for m, v in probe.items()}})
    metrics = json.loads((out / "all_results.json").read_text())
    return {"command": " ".join(_quote(a) for a in argv), "metrics": metrics, "validation_curve": curve}


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {\"") else arg


def t_interval(values: list[float]) -> dict:
    """Mean and 95% t-interval of paired differences (in points)."""
    x = 100 * np.asarray(values)
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(x)}
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(x)}


def summarise(runs: dict, modalities: list[str], seeds: list[int]) -> dict:
    """Test accuracy alone, probe under `none`, the gap (paired by seed) and fused under `none`."""
    test = {key: r["metrics"] for key, r in runs.items()}
    summary = {"fused_none": [test[f"none_s{s}"]["test_accuracy"] for s in seeds]}
    for m in modalities:
        alone = [test[f"alone_{m}_s{s}"]["test_accuracy"] for s in seeds]
        probe = [test[f"none_s{s}"][f"test_{m}_probe_accuracy"] for s in seeds]
        summary[m] = {
            "alone": alone, "probe_none": probe,
            "gap_points": t_interval([p - a for p, a in zip(probe, alone)]),
        }  # fmt: skip
    return summary


def cpu_model() -> str:
    """The CPU's model name (`lscpu`), recorded with the numbers."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def table(summary: dict, modalities: list[str]) -> str:
    """The markdown table of a summary: test accuracy (mean +- std over seeds) and gaps in points."""

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"

    def gap(g: dict) -> str:
        return f"{g['mean']:+.1f}" + ("" if g["low"] is None else f" [{g['low']:+.1f}, {g['high']:+.1f}]")

    head = [f"{m} alone" for m in modalities] + [f"{m} probe (`none`)" for m in modalities] + ["`none` fused"]
    head += [f"{m} gap" for m in modalities]
    row = [cell(summary[m]["alone"]) for m in modalities] + [cell(summary[m]["probe_none"]) for m in modalities]
    row += [cell(summary["fused_none"])] + [gap(summary[m]["gap_points"]) for m in modalities]
    return "\n".join(["| " + " | ".join(head) + " |", "|---" * len(head) + "|", "| " + " | ".join(row) + " |"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setting", choices=sorted(ENCODERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", nargs="*", default=[], choices=sorted(VARIANTS),
                        help="variants to run on none (seed: the first of --seeds) instead of the seeds' runs")
    parser.add_argument("--only", nargs="*", default=[None], help="with --variant: run none (give none) and/or "
                        "these modalities alone")
    parser.add_argument("--enc_root", default="/work/enc", help="the folders of `python -m aim_hf.offline`")
    parser.add_argument("--runs", default="calibration_runs", help="where each run's folder and log go")
    parser.add_argument("--out", default="benchmarks/results/calibration")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    modalities = list(ENCODERS[args.setting])
    root = Path(args.runs) / args.setting
    jobs = {}
    if args.variant:
        for v in args.variant:
            for only in args.only:
                only = None if only in (None, "none") else only
                key = f"variant_{v}" + (f"_alone_{only}" if only else "") + f"_s{args.seeds[0]}"
                jobs[key] = (args.seeds[0], only, VARIANTS[v])
    else:
        for s in args.seeds:
            jobs[f"none_s{s}"] = (s, None, [])
            for m in modalities:
                jobs[f"alone_{m}_s{s}"] = (s, m, [])
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            key: pool.submit(run, command(args.setting, args.enc_root, root / key, s, only, extra), root / key)
            for key, (s, only, extra) in jobs.items()
        }
        runs = {key: f.result() for key, f in futures.items()}
    path = Path(args.out) / f"{args.setting}.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.setdefault("runs", {}).update(runs)
    record["cpu"] = cpu_model()
    if not args.variant:
        record["seeds"] = args.seeds
        record["summary"] = summarise(record["runs"], modalities, args.seeds)
        print(table(record["summary"], modalities))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
