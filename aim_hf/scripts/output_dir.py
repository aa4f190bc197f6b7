"""What `aim-hf train` does with its output folder before anything loads: resume from a checkpoint
there, refuse to overwrite the checkpoints it holds, or delete them when asked; and how an
interrupted run goes on."""

from __future__ import annotations

import os

from aim_hf.training_args import AIMConfig


def prepare_output_dir(args: AIMConfig, overwrite: bool = False) -> None:
    """Settle `args.resume_from_checkpoint` before anything is loaded: `true` (any case) becomes the
    newest complete checkpoint in `output_dir`, a path must be a complete checkpoint, `false` is
    None. Without a checkpoint to resume from, an `output_dir` that holds checkpoints is refused,
    unless `overwrite`: then the main process deletes them (a later `true` must not find them)."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import sort_checkpoints

    from aim_hf.trainer import last_complete_checkpoint

    resume = args.resume_from_checkpoint
    if isinstance(resume, bool) or str(resume).lower() in ("true", "false"):
        resume = str(resume).lower() == "true"
    if resume is True:
        try:
            args.resume_from_checkpoint = last_complete_checkpoint(args.output_dir)
        except ValueError:
            raise ValueError(
                f"--resume_from_checkpoint true: --output_dir {args.output_dir!r} holds no complete checkpoint "
                "to resume from."
            ) from None
        return
    if resume:
        if not os.path.isdir(resume):
            raise ValueError(f"--resume_from_checkpoint {resume!r}: no such folder.")
        if not os.path.isfile(os.path.join(resume, TRAINER_STATE_NAME)):
            raise ValueError(
                f"--resume_from_checkpoint {resume!r} is not a complete checkpoint (no {TRAINER_STATE_NAME}: not a "
                "checkpoint folder, or its save was interrupted)."
            )
        return
    args.resume_from_checkpoint = None
    checkpoints = sort_checkpoints(args.output_dir) if os.path.isdir(args.output_dir) else []
    if checkpoints and not overwrite:
        names = ", ".join(os.path.basename(c) for c in checkpoints)
        raise ValueError(
            f"--output_dir {args.output_dir!r} already holds checkpoints ({names}): resume with "
            "--resume_from_checkpoint true, or give --overwrite_output_dir to delete them and train from scratch."
        )
    if checkpoints and args.should_save:
        import shutil

        for checkpoint in checkpoints:
            shutil.rmtree(checkpoint)


def resume_hint(output_dir: str) -> str:
    """How an interrupted run goes on: from the newest complete checkpoint in `output_dir`, if any."""
    from aim_hf.trainer import last_complete_checkpoint

    try:
        checkpoint = last_complete_checkpoint(output_dir)
    except ValueError:
        return "No checkpoint was saved yet (see --save_strategy)."
    return f"The same command with --resume_from_checkpoint true goes on from {checkpoint}."
