"""`aim-hf train` errors name their real cause, in one line, before anything trains: an encoder that
is neither a local folder nor a Hub repo, a Hub out of reach (offline), a data file that does not
exist, `--push_to_hub` without a token or a Hub; and an error raised mid-training is one line too.

huggingface_hub reads HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE when it is imported: the cases that
need a reachable (tests/hub_server.py) or closed endpoint run the command in a subprocess; nothing
here reaches a real host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from ports import free_port

from aim_hf import AIMTrainer, MultimodalCollator
from aim_hf.cli import main
from aim_hf.trainer import PushToHubError
from hub_server import HubServer

HINT = "(--debug or AIM_HF_DEBUG=1 shows the traceback)"
FAST = ["--max_steps", "2", "--per_device_train_batch_size", "8", "--eval_strategy", "no", "--save_strategy", "no",
        "--use_cpu", "true", "--disable_tqdm", "true"]  # fmt: skip
# Runs `main` on each argument list of argv[1] (JSON) in one process; prints [exit code, stderr, seconds] of each.
DRIVER = """
import contextlib, io, json, sys, time
from aim_hf.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err, start = io.StringIO(), time.monotonic()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results.append([code, err.getvalue(), time.monotonic() - start])
print(json.dumps(results))
"""


def one_line_error(err: str) -> str:
    """The message of `aim-hf train`'s one-line error (checked to be one line plus the hint, at the end of
    stderr, after at most the progress bars of the loading)."""
    lines = err.splitlines()[-2:]
    assert "Traceback" not in err and lines[1] == HINT and lines[0].startswith("aim-hf train: error: "), err
    return lines[0][len("aim-hf train: error: ") :]


def run_commands(env: dict[str, str], calls: list[list[str]]) -> list[tuple[int, str, float]]:
    """`main(argv)` for each argument list, in one subprocess with `env` added to the environment."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    env.pop("HF_HUB_OFFLINE", None)  # conftest sets it for the in-process tests
    if "HF_TOKEN" not in env or not env["HF_TOKEN"]:
        env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(calls)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Retry" not in done.stderr, done.stderr[-3000:]  # huggingface_hub's retries of an unreachable Hub
    return [tuple(result) for result in json.loads(done.stdout.splitlines()[-1])]


@pytest.fixture
def csv_file(tmp_path) -> str:
    path = tmp_path / "rows.csv"
    path.write_text("image,label\na.png,cat\n")
    return str(path)


def test_encoder_neither_folder_nor_hub_repo_and_hub_out_of_reach(csv_file, tmp_path):
    """`enc/vitt` is no local folder: the Hub says it has no such repo (one request), or cannot be
    reached: at once, without huggingface_hub's retries."""
    encoder = ["train", "--dataset_name", csv_file, "--encoders", '{"vision": "enc/vitt"}', *FAST]
    push = ["train", "--push_to_hub", "true", "--hub_model_id", "aim-user/model", "--output_dir", str(tmp_path / "p")]
    with HubServer() as hub:
        home = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home")}  # no token anywhere
        calls = [[*encoder, "--output_dir", str(tmp_path / "a")], push, [*push, "--hub_token", "hf_wrong"]]
        (code, err, _), (push_code, push_err, _), (bad_code, bad_err, _) = run_commands(home, calls)
        asked = [(method, path) for method, path, _ in hub.requests if "enc/vitt" in path]
        url = hub.url
    assert code == 2
    message = "the 'vision' encoder not found: no local folder 'enc/vitt' and no Hub repo of that name."
    assert one_line_error(err) == message
    assert asked == [("GET", "/api/models/enc/vitt")]
    assert push_code == 2 and one_line_error(push_err).startswith("--push_to_hub needs a Hub token with write access")
    assert bad_code == 2 and one_line_error(bad_err) == f"--push_to_hub: the Hub at {url} refuses the token (HTTP 401)."
    assert not (tmp_path / "a").exists() and not (tmp_path / "p").exists()  # nothing was trained or written

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every request is refused
    env = {"HF_ENDPOINT": closed, "HF_TOKEN": "hf_local_test_token", "HF_HOME": str(tmp_path / "home")}
    (code, err, seconds), (push_code, push_err, push_seconds) = run_commands(
        env, [[*encoder, "--output_dir", str(tmp_path / "b")], push]
    )
    assert code == 2 and seconds < 10
    assert one_line_error(err).startswith(
        f"the 'vision' encoder 'enc/vitt': no local folder of that name, and cannot reach the Hub (offline?) at "
        f"{closed}: "
    )
    assert push_code == 2 and push_seconds < 10
    assert one_line_error(push_err).startswith(f"--push_to_hub: cannot reach the Hub at {closed} (offline?): ")


def test_cached_encoders_load_at_once_when_the_hub_is_out_of_reach(cli_data, tmp_path):
    """Encoders downloaded before, the Hub now out of reach: trained from the cache, without asking the
    Hub for every optional file (each with seconds of retries: minutes in all)."""
    home, revision = tmp_path / "home", "0" * 40
    encoders = json.loads(cli_data[cli_data.index("--encoders") + 1])
    for modality, folder in encoders.items():  # the cache as a download leaves it
        repo = home / "hub" / f"models--aim-user--tiny-{modality}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(revision)
        shutil.copytree(folder, repo / "snapshots" / revision)
    hub_ids = json.dumps({m: f"aim-user/tiny-{m}" for m in encoders})
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HOME": str(home)}
    argv = ["train", cli_data[0], cli_data[1], "--encoders", hub_ids, "--output_dir", str(tmp_path / "out"), *FAST]
    [(code, err, seconds)] = run_commands(env, [argv])
    assert code == 0, err[-3000:]
    assert seconds < 60 and (tmp_path / "out" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["modality_order"] == list(encoders)


@pytest.mark.parametrize("data", ["own", "embedded"])
def test_offline_hub_id_not_in_the_cache(data, csv_file, tmp_path, capsys, monkeypatch):
    """HF_HUB_OFFLINE (conftest sets it): one line at once, naming both causes, on every data source."""
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    argv = ["--encoders", '{"vision": "enc/vitt"}'] + (["--dataset_name", csv_file] if data == "own" else [])
    assert main(["train", *argv, "--output_dir", str(tmp_path / "out"), *FAST]) == 2
    assert one_line_error(capsys.readouterr().err) == (
        "the 'vision' encoder 'enc/vitt': no local folder of that name, and cannot reach the Hub (offline?): HF_HUB_OFFLINE is "
        "set and the local cache does not hold it."
    )


def test_missing_data_file_and_offline_push(cli_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    encoders = cli_data[cli_data.index("--encoders") + 1]
    assert main(["train", "--dataset_name", "trian.csv", "--encoders", encoders, *FAST]) == 2
    assert one_line_error(capsys.readouterr().err) == "--dataset_name 'trian.csv': no such file."
    assert main(["train", "--push_to_hub", "true", "--hub_model_id", "aim-user/model", *FAST]) == 2
    offline = "--push_to_hub: cannot reach the Hub, HF_HUB_OFFLINE is set (offline)."
    assert one_line_error(capsys.readouterr().err) == offline
    assert os.listdir(tmp_path) == []  # nothing was trained or written


def test_repo_creation_failing_says_nothing_was_saved(build_model, build_processor, build_dataset, make_args):
    """Trainer creates the Hub repo when it is built: failing there, the error must not claim a saved model."""
    args = make_args(push_to_hub=True, hub_model_id="aim-user/model")
    with pytest.raises(PushToHubError) as caught:
        AIMTrainer(model=build_model(), args=args, train_dataset=build_dataset(), processing_class=build_processor())
    message = str(caught.value)
    assert "Nothing was trained or saved yet" in message and "stay in" not in message and "push_to_hub()" not in message
    assert "\n" not in message and not os.path.exists(os.path.join(args.output_dir, "config.json"))


@pytest.mark.parametrize(
    "error, message",
    [
        (ValueError("Example 3, modality 'vision': cannot read the image file 'x.png'.\nFix or drop this row."),
         "Example 3, modality 'vision': cannot read the image file 'x.png'. Fix or drop this row."),
        (RuntimeError("out of memory"), "RuntimeError: out of memory"),
    ],
)  # fmt: skip
def test_error_raised_mid_training_is_one_line(error, message, cli_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    collate = MultimodalCollator.__call__
    calls = []

    def fail_on_the_second_batch(self, examples):
        calls.append(len(examples))
        if len(calls) == 2:
            raise error
        return collate(self, examples)

    monkeypatch.setattr(MultimodalCollator, "__call__", fail_on_the_second_batch)
    argv = ["train", *cli_data, "--output_dir", str(tmp_path / "out"), *FAST]
    assert main(argv) == 2
    assert one_line_error(capsys.readouterr().err) == message
    calls.clear()
    with pytest.raises(type(error)):  # --debug keeps the traceback
        main([*argv, "--debug"])
