"""The processes of the Hub tests (test_hub.py runs them with HF_ENDPOINT / HF_TOKEN set, since
huggingface_hub reads them when imported).

    python hub_client.py train --encoders JSON --output_dir DIR --repo_id USER/NAME [--push] ...
        Train a tiny model, push it with `trainer.push_to_hub`, load it back from the Hub with aim_hf's
        classes and check its outputs; with torchrun, every rank runs this and only rank 0 pushes.
    python hub_client.py load-remote --repo_id USER/NAME --expected NPZ
        As a user without aim_hf: load the pushed model with trust_remote_code and its processors with
        the Auto classes (as the model card shows), and check the outputs against the expected ones.
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import sys

MODALITIES = ("vision", "text")


def train(opts: argparse.Namespace) -> None:
    rank = int(os.environ.get("RANK", "0"))
    # Tags every Hub request of this process (the server records it), before huggingface_hub is imported.
    os.environ["HF_HUB_USER_AGENT_ORIGIN"] = f"rank{rank}"
    import numpy as np
    import torch
    from datasets import Dataset
    from tiny import NUM_LABELS, make_processors, make_rows
    from transformers import AutoModel

    from aim_hf import AIMConfig, AIMTrainer, MultimodalCollator, MultimodalModel, MultimodalProcessor
    from aim_hf.trainer import PushToHubError, leave_process_group

    paths = json.loads(opts.encoders)
    processors = make_processors(paths)
    torch.manual_seed(0)
    model = MultimodalModel.from_encoders({m: paths[m] for m in MODALITIES}, num_labels=NUM_LABELS)
    processor = MultimodalProcessor({m: processors[m] for m in MODALITIES})
    args = AIMConfig(
        output_dir=opts.output_dir,
        modulation="ogm_ge",
        max_steps=opts.max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        eval_strategy="steps",
        eval_steps=opts.max_steps,
        push_to_hub=opts.push,
        hub_model_id=opts.repo_id,
        hub_strategy=opts.hub_strategy,
        hub_private_repo=opts.private,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = AIMTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(make_rows(16, MODALITIES)),
        eval_dataset=Dataset.from_list(make_rows(6, MODALITIES, seed=1)),
        processing_class=processor,
    )
    trainer.train()
    report: dict[str, object] = {"push_error": None, "world_size": trainer.args.world_size}
    try:
        trainer.push_to_hub(dataset="synthetic-rows", license="apache-2.0")
    except PushToHubError as err:
        report["push_error"] = str(err)
    leave_process_group()  # before rank 0 goes on alone
    if rank != 0:
        return
    if opts.bad_token:
        try:
            trainer.push_to_hub(token="hf_wrong_token")
        except PushToHubError as err:
            report["bad_token_error"] = str(err)

    rows = make_rows(4, MODALITIES, seed=2)
    batch = MultimodalCollator(processor)(rows)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits
    if opts.check_local:
        # Whatever happened to the pushes, the saved model is whole and gives the same outputs.
        local = AutoModel.from_pretrained(opts.output_dir).eval()
        with torch.no_grad():
            torch.testing.assert_close(local(**batch).logits, expected)
    if report["push_error"] is None:
        hub_model = AutoModel.from_pretrained(opts.repo_id).eval()
        assert isinstance(hub_model, MultimodalModel), type(hub_model)
        hub_processor = MultimodalProcessor.from_pretrained(opts.repo_id)
        hub_batch = MultimodalCollator(hub_processor)(rows)
        with torch.no_grad():
            torch.testing.assert_close(hub_model(**hub_batch).logits, expected)
        np.savez(
            opts.expected,
            logits=expected.numpy(),
            images=np.stack([np.asarray(r["vision"].convert("RGB")) for r in rows]),
            texts=np.array([r["text"] for r in rows]),
        )
    with open(os.path.join(opts.output_dir, "hub_report.json"), "w") as f:
        json.dump(report, f)


class _NoAimHf(importlib.abc.MetaPathFinder):
    """Makes `aim_hf` unimportable, as on a machine where only transformers is installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "aim_hf" or name.startswith("aim_hf."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


def load_remote(opts: argparse.Namespace) -> None:
    sys.meta_path.insert(0, _NoAimHf())
    try:
        import aim_hf  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("aim_hf is still importable")
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(opts.repo_id, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert not any(name.startswith("aim_hf") for name in sys.modules)
    expected = np.load(opts.expected)
    vision = AutoImageProcessor.from_pretrained(opts.repo_id, subfolder="vision")
    text = AutoTokenizer.from_pretrained(opts.repo_id, subfolder="text")
    inputs = {
        "vision": dict(vision([Image.fromarray(a) for a in expected["images"]], return_tensors="pt")),
        "text": dict(text(expected["texts"].tolist(), padding=True, truncation=True, return_tensors="pt")),
    }
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, torch.from_numpy(expected["logits"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--encoders", required=True, help="JSON of the tiny encoders' paths (tiny.save_tiny_encoders)")
    t.add_argument("--output_dir", required=True)
    t.add_argument("--repo_id", required=True)
    t.add_argument("--push", action="store_true", help="args.push_to_hub: create the repo at start, push saves")
    t.add_argument("--hub_strategy", default="every_save")
    t.add_argument("--private", action="store_true")
    t.add_argument("--max_steps", type=int, default=2)
    t.add_argument("--expected", help="where to save the inputs and outputs for load-remote")
    t.add_argument("--check_local", action="store_true", help="reload the local model and compare outputs")
    t.add_argument("--bad_token", action="store_true", help="then push with a wrong token")
    r = sub.add_parser("load-remote")
    r.add_argument("--repo_id", required=True)
    r.add_argument("--expected", required=True)
    opts = parser.parse_args()
    train(opts) if opts.command == "train" else load_remote(opts)


if __name__ == "__main__":
    main()
