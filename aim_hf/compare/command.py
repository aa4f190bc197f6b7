"""`aim-hf compare`: train several balancing methods over paired seeds on the same data, each modality
alone too, and report which one helps, with paired 95% intervals (`aim_hf.compare`)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aim_hf.compare.record import collect
from aim_hf.compare.report import methods_table, plot_accuracy, suppression_table, verdict
from aim_hf.compare.runs import Progress, RunFailed, method_options, plan_runs, run_all

USAGE = (
    "aim-hf compare [CONFIG.yaml] --methods none aim ... --seeds 0 1 2 [--jobs N] [--work_dir DIR] "
    "[aim-hf train options]"
)
# Set per run by the comparison; not to be given among the training options.
PER_RUN_OPTIONS = ("--seed", "--modulation", "--modulation_kwargs", "--only_modality")
REPORT_NAME = "compare"


def build_parser() -> argparse.ArgumentParser:
    """The comparison's own options; every other option goes to each `aim-hf train` run."""
    parser = argparse.ArgumentParser(
        prog="aim-hf compare",
        usage=USAGE,
        description="Train each method on each seed exactly as `aim-hf train` would with the other options (the "
        "embedded data, or --dataset_name with --modality_columns and --encoders, or a YAML/JSON file), and each "
        "modality alone; report accuracies, paired differences with 95% t-intervals and a verdict into "
        "--output_dir (compare.md, compare.json, plots).",
        allow_abbrev=False,
    )
    parser.add_argument("--methods", nargs="+", default=["none", "aim"],
                        help="Modulation methods, each NAME[:option=value,...] (e.g. aim:r_max=0.25, "
                        "ogm_ge:alpha=0.3); `none`, the reference, is always run.")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="Training seeds, the same for every method (the data split stays fixed).")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1,
                        help="Runs at a time, each in its own process. With GPUs each run sees one, "
                        "CUDA_VISIBLE_DEVICES = its slot modulo the GPU count: --jobs = the GPU count "
                        "gives one run per GPU.")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (OMP_NUM_THREADS; default: inherited).")  # fmt: skip
    parser.add_argument("--work_dir", type=Path, default=None,
                        help="Every run's log and result (default: OUTPUT_DIR/compare_runs). A rerun reuses "
                        "the finished runs whose options are identical and trains the others.")  # fmt: skip
    parser.add_argument("--no_alone", action="store_true", help="Do not train each modality alone.")
    return parser


def parse_compare_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str], Any]:
    """Split `argv` into the comparison's options and the training options, and check both before
    anything trains: returns the options, the training options and `aim-hf train`'s parsed arguments."""
    from aim_hf.data.av_digits import MODALITIES
    from aim_hf.scripts.sources import source_of
    from aim_hf.scripts.train import parse_train_args

    args, train_options = build_parser().parse_known_args(list(argv))
    for option in PER_RUN_OPTIONS:
        if any(o == option or o.startswith(option + "=") for o in train_options):
            raise ValueError(f"{option} is set per run by the comparison (--methods, --seeds); leave it out.")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}.")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds repeats a seed: {args.seeds}.")
    if "none" not in args.methods:
        args.methods = ["none", *args.methods]  # the reference of every paired difference
    if len(set(args.methods)) != len(args.methods):
        raise ValueError(f"--methods repeats a method: {args.methods}.")
    parsed = parse_train_args(train_options)
    model_args, data_args, training_args = parsed
    source = source_of(data_args)
    modalities = list(MODALITIES) if source == "embedded" else list(model_args.encoders)
    for method in args.methods:  # each method's options, checked as its runs will pass them
        if method.split(":")[0] in modalities:
            raise ValueError(f"method {method!r} names a modality; each modality is trained alone anyway.")
        parse_train_args([*train_options, *method_options(method, modalities)])
    args.modalities = modalities
    named = {"own": data_args.dataset_name, "setting": f"setting {data_args.setting}"}
    args.data = named.get(source, f"AV-digits {data_args.setting}")
    args.work_dir = args.work_dir or Path(training_args.output_dir) / "compare_runs"
    return args, train_options, training_args


def write_report(
    results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, command: str, train_options: Sequence[str],
    output_dir: Path, failed: Sequence[RunFailed],
) -> str:
    """Write `compare.json` (the benchmark's schema), `compare.md` and the plots to `output_dir`;
    returns the markdown."""
    record = collect(results, args.modalities, setting=args.data, command=command,
                     train_options=list(train_options))  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{REPORT_NAME}.json").write_text(json.dumps(record))
    plots = plot_accuracy(results, args.modalities, output_dir, REPORT_NAME)
    seeds = next(iter(record["methods"].values()))["seeds"] if record["methods"] else []
    lines = [
        "# Comparison",
        "",
        f"- command: `{command}`",
        f"- every run: `aim-hf train {shlex.join(train_options)}` plus the method's options and `--seed`",
        f"- seeds: {', '.join(map(str, seeds))} (the same for every method); per-seed values in `{REPORT_NAME}.json`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        "**Verdict.** " + verdict(record),
        "",
    ]
    if failed:
        lines += ["Failed runs (their seeds are left out of every table):", ""]
        lines += [f"- `{f.run.method}` seed {f.run.seed}: exit status {f.returncode}, log `{f.run.log_path}`"
                  for f in failed]  # fmt: skip
        lines.append("")
    lines += suppression_table(record) + methods_table(record, args.modalities)
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    text = "\n".join(lines)
    (output_dir / f"{REPORT_NAME}.md").write_text(text)
    return text


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def compare(argv: Sequence[str], args: argparse.Namespace, train_options: list[str], training_args: Any) -> int:
    """Run the comparison `argv` (the options after `aim-hf compare`, parsed by [`parse_compare_args`]
    into the other arguments); 0 when every run finished, 1 when some failed (the report leaves their
    seeds out)."""
    methods = list(args.methods) + ([] if args.no_alone else list(args.modalities))
    runs = plan_runs(methods, args.seeds, args.modalities, train_options, args.work_dir)
    print(f"aim-hf compare: {len(runs)} runs ({len(methods)} x {len(args.seeds)} seeds) in {args.work_dir}", flush=True)
    by_key = run_all(runs, args.jobs, args.threads, _gpu_count(), Progress(len(runs), args.jobs))
    failed = [r for r in by_key.values() if isinstance(r, RunFailed)]
    seeds = [s for s in args.seeds if not any(isinstance(by_key[m, s], RunFailed) for m in methods)]
    output_dir = Path(training_args.output_dir)
    if not seeds:
        for f in failed:
            print(f"aim-hf compare: {f.run.method} seed {f.run.seed} failed; see {f.run.log_path}", file=sys.stderr)
        print("aim-hf compare: error: no seed has every run finished; nothing to report.", file=sys.stderr)
        return 1
    results = {m: [by_key[m, s] for s in seeds] for m in methods}
    command = shlex.join(["aim-hf", "compare", *argv])
    print(write_report(results, args, command, train_options, output_dir, failed))
    print(f"Report written to {output_dir / (REPORT_NAME + '.md')} (and .json, plots)")
    return 1 if failed else 0


def main(argv: Sequence[str]) -> int:
    """`aim-hf compare` with the options `argv`: [`parse_compare_args`], then [`compare`]."""
    return compare(argv, *parse_compare_args(argv))
