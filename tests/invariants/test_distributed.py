"""Two processes (DDP over gloo on CPU) train exactly as one process with the same global batch,
for every modulation method and the compositions of `dist_train.COMPOSITIONS`, launched with
`torchrun` and with `accelerate launch`.

The default sampler needs no help: two processes with batch b take, at each step, the rows the
single process takes with batch 2b (rank 0 the first half, rank 1 the second); the tests check it.
Dropout is off in these models (see dist_train.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launchers import LAUNCHERS
from dist_train import METHODS, assert_close, make_trainer, snapshot

SCRIPT = Path(__file__).parents[1] / "helpers" / "dist_train.py"
BATCH, STEPS = 2, 4





@pytest.fixture(scope="module")
def single_process(encoder_paths, tmp_path_factory) -> dict[str, dict]:
    """Each method trained on one process with the global batch (2 x BATCH)."""
    out = tmp_path_factory.mktemp("single")
    results = {}
    for method in METHODS:
        trainer = make_trainer(
            method, encoder_paths, out / method, per_device_train_batch_size=2 * BATCH, max_steps=STEPS
        )
        trainer.train()
        results[method] = snapshot(trainer)
    return results


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_processes_match_one(launcher, encoder_paths, single_process, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, *LAUNCHERS[launcher](), str(SCRIPT), str(Path(encoder_paths["vocab"]).parent)]
    command += [str(tmp_path), "--batch-size", str(BATCH), "--steps", str(STEPS), "--methods", *METHODS]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    for method, single in single_process.items():
        ranks = [torch.load(tmp_path / f"{method}-rank{r}.pt", weights_only=False) for r in range(2)]
        # Two processes really ran, each on its own half of every global batch.
        for step, (a, b, whole) in enumerate(zip(ranks[0]["batches"], ranks[1]["batches"], single["batches"])):
            assert len(a) == len(b) == BATCH and a + b == whole, f"{method}, step {step}: rows {a} + {b} != {whole}"
        # Every rank holds the same parameters and modulation state, bit for bit.
        assert_close(ranks[1]["params"], ranks[0]["params"], f"{method} params rank1 vs rank0", atol=0, rtol=0)
        assert_close(ranks[1]["modulation"], ranks[0]["modulation"], f"{method} state rank1 vs rank0", atol=0, rtol=0)
        # ... and the same as one process with the same global batch, up to float summation order.
        for rank in ranks:
            assert rank["modulation_steps"] == single["modulation_steps"] == STEPS
            assert_close(rank["params"], single["params"], f"{method} params vs one process")
            assert_close(rank["modulation"], single["modulation"], f"{method} state vs one process")
        # The logged metrics (reduced across processes) equal the single process's, log by log (a method
        # may log other keys at other steps, e.g. MLA the loss of the modality it trains).
        keys = [[k for k in log if "/" in k] for log in single["logs"]]
        assert all(keys) and len(ranks[0]["logs"]) == len(single["logs"])
        assert_close([{k: log[k] for k in ks} for ks, log in zip(keys, ranks[0]["logs"])],
                     [{k: log[k] for k in ks} for ks, log in zip(keys, single["logs"])], f"{method} logs")  # fmt: skip
