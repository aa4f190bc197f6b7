"""Pushing to the Hub end to end, against a local server speaking the Hub API (hub_server.py).

huggingface_hub reads HF_ENDPOINT / HF_TOKEN when it is imported, so training and loading run in
subprocesses (hub_client.py) pointed at the server; the server runs in this process and records
every repo, file and commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub_server import HubServer
from ports import free_port

CLIENT = str(Path(__file__).parent / "helpers" / "hub_client.py")
TIMEOUT = 300


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


def _env(endpoint: str, token: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)  # conftest sets it for the in-process tests
    env.update(
        HF_ENDPOINT=endpoint,
        HF_TOKEN=token,
        HF_HOME=str(tmp_path / "hf_home"),  # a fresh cache: downloads really come from the server
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        TRANSFORMERS_VERBOSITY="error",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    return env


def _run(cmd: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def _train(encoder_paths, output_dir: Path, repo_id: str, env, *flags: str, launcher=(sys.executable,)) -> dict:
    cmd = [*launcher, CLIENT, "train", "--encoders", json.dumps(encoder_paths), "--output_dir", str(output_dir),
           "--repo_id", repo_id, *flags]
    _run(cmd, env)
    return json.loads((output_dir / "hub_report.json").read_text())



def _card_metadata(data: bytes) -> dict:
    return yaml.safe_load(data.decode().split("---")[1])


def test_push_load_back_and_remote_code(hub, encoder_paths, tmp_path):
    repo_id = f"{hub.user}/tiny-aim"
    env = _env(hub.url, hub.token, tmp_path)
    expected = tmp_path / "expected.npz"
    report = _train(
        encoder_paths, tmp_path / "out", repo_id, env,
        "--push", "--hub_strategy", "checkpoint", "--private", "--expected", str(expected), "--bad_token", "--check_local",
    )
    # The client loaded the model and processors back from the server and got the same outputs.
    assert report["push_error"] is None and expected.is_file()

    repo = hub.repos[repo_id]
    assert repo.private
    for name in ("config.json", "model.safetensors", "configuration.py", "modeling.py", "README.md",
                 "accuracy.png", "modulation.png", "multimodal_processor.json",
                 "vision/preprocessor_config.json", "text/tokenizer_config.json",
                 "last-checkpoint/model.safetensors", "last-checkpoint/README.md"):
        assert name in repo.files, f"{name} was not pushed; the repo has {sorted(repo.files)}"
    assert json.loads(repo.files["config.json"])["auto_map"]["AutoModel"] == "modeling.MultimodalModel"
    card = repo.files["README.md"].decode()
    metadata = _card_metadata(repo.files["README.md"])
    assert metadata["license"] == "apache-2.0" and "ogm_ge" in metadata["tags"]
    assert f'repo_id = "{repo_id}"' in card and "synthetic-rows" in card
    assert "](accuracy.png)" in card and "](modulation.png)" in card
    assert repo.files["accuracy.png"].startswith(b"\x89PNG")

    summaries = [c.summary for c in hub.commits]
    # hub_strategy="checkpoint": each save pushes the model and the checkpoint; the card and the code
    # travel with the in-training pushes too; then the final push.
    assert summaries.count("Training in progress, step 2") == 1
    assert "End of training" in summaries
    in_training = next(c for c in hub.commits if c.summary == "Training in progress, step 2")
    assert {"README.md", "modeling.py", "configuration.py", "config.json"} <= set(in_training.files)

    # A wrong token: a clear error, nothing committed (and the client found the local model whole).
    assert "401" in report["bad_token_error"] and "HF_TOKEN" in report["bad_token_error"]
    assert str(tmp_path / "out") in report["bad_token_error"]
    assert hub.commits[-1].summary == "End of training"

    # A user without aim_hf loads it with trust_remote_code and the Auto processors.
    _run([sys.executable, CLIENT, "load-remote", "--repo_id", repo_id, "--expected", str(expected)], env)


def test_two_processes_only_the_main_one_pushes(hub, encoder_paths, tmp_path):
    repo_id = f"{hub.user}/tiny-aim-ddp"
    env = _env(hub.url, hub.token, tmp_path)
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(free_port()))
    report = _train(encoder_paths, tmp_path / "out", repo_id, env, "--push", "--expected",
                    str(tmp_path / "expected.npz"), launcher=launcher)
    assert report["push_error"] is None and report["world_size"] == 2
    assert hub.commits and {c.origin for c in hub.commits} == {"rank0"}
    writes = {origin for method, _, origin in hub.requests if method == "POST"}
    assert writes == {"rank0"}, f"processes other than rank 0 wrote to the Hub: {writes}"
    assert {"model.safetensors", "README.md", "modeling.py"} <= set(hub.repos[repo_id].files)


def test_push_to_a_server_that_is_down_keeps_the_local_model(encoder_paths, tmp_path):
    # Nothing listens on this port any more: every request is refused.
    env = _env(f"http://127.0.0.1:{free_port()}", "hf_local_test_token", tmp_path)
    output_dir = tmp_path / "out"
    report = _train(encoder_paths, output_dir, "aim-user/unreachable", env, "--check_local")
    error = report["push_error"]
    assert error and "aim-user/unreachable" in error and str(output_dir) in error and "push_to_hub()" in error
    # The client reloaded the saved model and got the trained model's outputs; the checkpoint is whole.
    for name in ("model.safetensors", "README.md", "trainer_state.json", "optimizer.pt"):
        assert (output_dir / "checkpoint-2" / name).is_file()
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()
