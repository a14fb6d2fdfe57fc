"""``xswarm models list|pull|path|check`` run as real subprocesses.

Bad model inputs must end in one line on stderr naming the file and the fix,
with the documented exit code and no traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli_helpers import run_xswarm
from tests.model_fixtures import copy_model
from xswarm.models import REGISTRY, ResolvedModel


def _one_line_error(result: object, code: int) -> str:
    """The single ``xswarm: error:`` line of a failed run (asserting there is nothing else)."""
    assert result.returncode == code, (result.returncode, result.stderr)  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("xswarm: error: ")
    return lines[0].removeprefix("xswarm: error: ")


def test_list_json_parses_and_marks_what_is_here(tiny_random: ResolvedModel) -> None:
    result = run_xswarm("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == list(REGISTRY)
    assert rows["tiny-random"]["kind"] == "moshi"
    assert rows["tiny-random"]["cached"] is True
    assert rows["tiny-random"]["path"] == str(tiny_random.directory)
    assert rows["moshiko-mlx-q4"] == {
        "name": "moshiko-mlx-q4",
        "kind": "moshi",
        "quantization": "q4",
        "approx_bytes": REGISTRY["moshiko-mlx-q4"].approx_bytes,
        "cached": False,
        "path": None,
        "repo": "kyutai/moshiko-mlx-q4",
        "description": "Moshi 7B, male voice, q4 (MLX)",
    }
    text = run_xswarm("models", "list")
    assert text.returncode == 0
    assert any(
        line.split()[:3] == ["stt-1b-en_fr-mlx", "stt", "bf16"] for line in text.stdout.splitlines()
    )


def test_path_generates_tiny_random_on_first_use(isolated_home: Path) -> None:
    result = run_xswarm("models", "path", "tiny-random")
    assert result.returncode == 0, result.stderr
    directory = Path(result.stdout.strip())
    assert directory == isolated_home / "cache" / "models" / "tiny-random"
    assert (directory / "model.safetensors").is_file() and (directory / "config.json").is_file()
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_unknown_name_is_a_usage_error_with_suggestions() -> None:
    message = _one_line_error(run_xswarm("models", "path", "moshika-q8"), 2)
    assert message.startswith("unknown model 'moshika-q8': did you mean moshika-mlx-q8")


def test_published_model_not_downloaded_names_the_pull_command() -> None:
    message = _one_line_error(run_xswarm("models", "path", "stt-2.6b-en-mlx"), 1)
    assert message == (
        "model stt-2.6b-en-mlx is not downloaded: missing config.json, model.safetensors, "
        "mimi-pytorch-e351c8d8@125.safetensors, tokenizer_en_audio_4000.model from "
        "kyutai/stt-2.6b-en-mlx in the Hugging Face cache: run `xswarm models pull stt-2.6b-en-mlx`"
    )


def test_pull_offline_fails_in_one_line() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    message = _one_line_error(run_xswarm("models", "pull", "moshiko-mlx-q4"), 1)
    assert message == (
        "cannot pull moshiko-mlx-q4: offline mode (HF_HUB_OFFLINE is set); "
        "unset HF_HUB_OFFLINE and run `xswarm models pull moshiko-mlx-q4` again"
    )


def test_check_loads_a_sound_model(tiny_random: ResolvedModel) -> None:
    result = run_xswarm("models", "check", "tiny-random", "--quantize", "4", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["name"] == "tiny-random"
    assert summary["weights"] == "4-bit"
    assert (summary["codec"], summary["codebooks"], summary["text_tokens"]) == (
        "MlxMimiCodec",
        8,
        512,
    )


def test_missing_directory(tmp_path: Path) -> None:
    message = _one_line_error(run_xswarm("models", "check", str(tmp_path / "gone")), 2)
    assert message.startswith(f"model directory {tmp_path / 'gone'} does not exist: ")


def _damaged(tiny_random: ResolvedModel, tmp_path: Path) -> Path:
    return copy_model(tiny_random, tmp_path / "model")


def test_missing_file(tiny_random: ResolvedModel, tmp_path: Path) -> None:
    directory = _damaged(tiny_random, tmp_path)
    (directory / "mimi-tiny-random.safetensors").unlink()
    message = _one_line_error(run_xswarm("models", "check", str(directory)), 1)
    assert message == (
        f"model {directory} is incomplete: missing mimi-tiny-random.safetensors in {directory}: "
        "copy them there or point --model at a complete checkpoint"
    )


def test_truncated_weights(tiny_random: ResolvedModel, tmp_path: Path) -> None:
    directory = _damaged(tiny_random, tmp_path)
    path = directory / "model.safetensors"
    size = path.stat().st_size
    os.truncate(path, size // 2)
    message = _one_line_error(run_xswarm("models", "check", str(directory)), 1)
    assert message == (
        f"{path}: truncated ({size // 2} of {size} bytes): model.safetensors was cut short "
        "(an interrupted download or copy); fetch it again"
    )


def test_truncated_codec(tiny_random: ResolvedModel, tmp_path: Path) -> None:
    directory = _damaged(tiny_random, tmp_path)
    path = directory / "mimi-tiny-random.safetensors"
    os.truncate(path, 4)
    message = _one_line_error(run_xswarm("models", "check", str(directory)), 1)
    assert message == f"{path}: truncated or empty (4 bytes), not a safetensors file"


def test_shape_mismatch(tiny_random: ResolvedModel, tmp_path: Path) -> None:
    directory = _damaged(tiny_random, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["dim"] = 512  # the weights are for 256
    (directory / "config.json").write_text(json.dumps(config))
    message = _one_line_error(run_xswarm("models", "check", str(directory)), 1)
    assert message == (
        f"{directory / 'model.safetensors'}: tensor audio_embs.0.weight has shape (2049, 256), "
        f"expected (2049, 512) for the config of {directory} (wrong model or quantisation?)"
    )


@pytest.mark.parametrize(
    ("source", "target", "flag", "expected"),
    [
        (
            "model.q4.safetensors",
            "model.q8.safetensors",
            ["--quantize", "8"],
            "holds 4-bit weights (group 32) but is loaded as 8-bit (group 64) "
            "(wrong quantisation: a q4 file named model.q8.safetensors?)",
        ),
        (
            "model.q8.safetensors",
            "model.safetensors",
            [],
            "holds 8-bit quantised weights but is loaded as unquantised bf16 "
            "(wrong quantisation: a q8 file named model.safetensors?)",
        ),
        (
            "model.safetensors",
            "model.q4.safetensors",
            ["--quantize", "4"],
            "holds unquantised weights but is loaded as 4-bit "
            "(wrong quantisation: a bf16 file named model.q4.safetensors?)",
        ),
    ],
)
def test_wrong_quantisation(
    tiny_random: ResolvedModel,
    tmp_path: Path,
    source: str,
    target: str,
    flag: list[str],
    expected: str,
) -> None:
    directory = _damaged(tiny_random, tmp_path)
    (directory / target).write_bytes((directory / source).read_bytes())
    message = _one_line_error(run_xswarm("models", "check", str(directory), *flag), 1)
    assert message == f"{directory / target}: {expected}"


def test_garbage_weights_file(tiny_random: ResolvedModel, tmp_path: Path) -> None:
    directory = _damaged(tiny_random, tmp_path)
    path = directory / "model.safetensors"
    path.write_bytes((40).to_bytes(8, "little") + b"{this is not json}" + b" " * 100)
    message = _one_line_error(run_xswarm("models", "check", str(directory)), 1)
    assert message.startswith(f"{path}: not a valid safetensors file (")


def test_pull_without_network_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed local port stands for "no network" without leaving this machine.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    message = _one_line_error(run_xswarm("models", "pull", "stt-1b-en_fr-mlx"), 1)
    assert message == (
        "cannot pull stt-1b-en_fr-mlx: 127.0.0.1:9 not reachable while fetching config.json "
        "(connection refused); check the network and run `xswarm models pull stt-1b-en_fr-mlx` "
        "again (it resumes)"
    )
