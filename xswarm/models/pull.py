"""Download a published model's files into the Hugging Face cache, with progress.

``huggingface_hub`` does the downloading (into ``HF_HOME``, shared with other
tools, resumed from its ``.incomplete`` file after an interruption); this
module adds what xswarm needs around it: a per-file progress callback (the
hub's own tqdm bars are turned off; the CLI draws a rich bar from the
callback) and one-line errors for offline mode, no network, a missing repo or
a gated one.

Generated models are "pulled" by generating them (:mod:`xswarm.models.tiny`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from xswarm.errors import ModelError
from xswarm.models.registry import CONFIG_FILE, ModelSpec

POLL_SECONDS: Final = 0.2  # how often the partial file's size is read for the progress bar
OFFLINE_ENV: Final = "HF_HUB_OFFLINE"


@dataclasses.dataclass(frozen=True)
class PullProgress:
    """Progress of one file: ``done`` of ``total`` bytes (total 0 when unknown)."""

    filename: str
    done: int
    total: int
    finished: bool = False


ProgressCallback = Callable[[PullProgress], None]


def hub_host() -> str:
    """The Hugging Face hub's host name (``HF_ENDPOINT`` points at a mirror)."""
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return urlparse(endpoint).netloc or endpoint


def offline_mode() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks huggingface_hub never to touch the network."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _offline_error(spec: ModelSpec) -> ModelError:
    return ModelError(
        f"cannot pull {spec.name}: offline mode ({OFFLINE_ENV} is set); "
        f"unset {OFFLINE_ENV} and run `{spec.pull_command}` again"
    )


def _network_error(spec: ModelSpec, filename: str, error: BaseException) -> ModelError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if isinstance(error, OfflineModeIsEnabled):
        return _offline_error(spec)
    if isinstance(error, GatedRepoError):
        return ModelError(
            f"cannot pull {spec.name}: {spec.repo} is gated; accept its terms on "
            "huggingface.co and log in with `huggingface-cli login`"
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelError(
            f"cannot pull {spec.name}: repository {spec.repo} not found on {hub_host()}"
        )
    if isinstance(error, EntryNotFoundError):
        return ModelError(f"cannot pull {spec.name}: {filename} not found in {spec.repo}")
    return ModelError(
        f"cannot pull {spec.name}: {hub_host()} not reachable while fetching {filename} "
        f"({_short_reason(error)}); check the network and run `{spec.pull_command}` "
        "again (it resumes)"
    )


def _short_reason(error: BaseException) -> str:
    """A few words on why a connection failed, out of urllib3's nested messages."""
    text = str(error)
    for marker, reason in (
        ("Name or service not known", f"cannot resolve {hub_host()}"),
        ("Temporary failure in name resolution", f"cannot resolve {hub_host()}"),
        ("NameResolutionError", f"cannot resolve {hub_host()}"),
        ("Connection refused", "connection refused"),
        ("timed out", "connection timed out"),
        ("Network is unreachable", "network unreachable"),
        ("SSL", "TLS handshake failed"),
    ):
        if marker in text:
            return reason
    first = text.splitlines()[0] if text else type(error).__name__
    return first if len(first) <= 120 else first[:117] + "..."


def _partial_size(blobs: Path) -> int:
    try:
        return max((p.stat().st_size for p in blobs.glob("*.incomplete")), default=0)
    except OSError:
        return 0


def _download_one(
    spec: ModelSpec, filename: str, progress: ProgressCallback | None, repo: str | None = None
) -> Path:
    """Fetch ``filename`` of ``repo`` (default: the model's own repo) into the cache."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.constants import REPO_ID_SEPARATOR

    from xswarm.models.resolve import hf_cache_dir

    repo = repo or spec.repo
    assert repo is not None
    try:
        total = get_hf_file_metadata(hf_hub_url(repo, filename)).size or 0
    except Exception as error:
        raise _network_error(spec, filename, error) from None
    blobs = (
        hf_cache_dir()
        / ("models" + REPO_ID_SEPARATOR + repo.replace("/", REPO_ID_SEPARATOR))
        / "blobs"
    )
    cache = hf_cache_dir()
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["path"] = hf_hub_download(repo, filename, cache_dir=cache)
        except BaseException as error:  # handed to the caller's thread below
            result["error"] = error

    # The download runs in a helper thread so this thread can report progress;
    # if the user interrupts, the thread is a daemon and the partial file stays
    # for the next pull to resume.
    thread = threading.Thread(target=work, name=f"pull-{filename}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(POLL_SECONDS)
        if progress is not None and thread.is_alive():
            progress(PullProgress(filename, min(_partial_size(blobs), total), total))
    if "error" in result:
        raise _network_error(spec, filename, result["error"])  # type: ignore[arg-type]
    if progress is not None:
        progress(PullProgress(filename, total, total, finished=True))
    return Path(str(result["path"]))


def pull_files(spec: ModelSpec, progress: ProgressCallback | None = None) -> list[Path]:
    """Make every file of ``spec`` present in the Hugging Face cache.

    Files already cached are reported finished and not fetched again. Runs on
    the caller's thread (the download itself in a helper thread). Raises
    :class:`ModelError` with a one-line reason on any failure.
    """
    from xswarm.models.resolve import DEFAULT_LM_FILE, cached_file

    if spec.repo is None:
        raise ModelError(f"{spec.name} is generated, not downloaded")
    if offline_mode():
        raise _offline_error(spec)
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()

    def fetch(filename: str) -> Path:
        path = cached_file(spec, filename)
        if path is None:
            return _download_one(spec, filename, progress)
        if progress is not None:
            size = path.stat().st_size
            progress(PullProgress(filename, size, size, finished=True))
        return path

    names = [spec.lm_file, spec.codec_file, spec.tokenizer_file]
    done: list[Path] = []
    if spec.has_config:
        # The published config names the other files; trust it over the registry.
        config_path = fetch(CONFIG_FILE)
        done.append(config_path)
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelError(f"{config_path}: unreadable config ({error})") from None
        names = [
            str(config.get("moshi_name") or DEFAULT_LM_FILE),
            str(config.get("mimi_name") or spec.codec_file),
            str(config.get("tokenizer_name") or spec.tokenizer_file),
        ]
    done.extend(fetch(name) for name in dict.fromkeys(names))
    return done


def pull_voices(
    spec: ModelSpec, voices: list[str], progress: ProgressCallback | None = None
) -> list[Path]:
    """Fetch Kyutai TTS voice embeddings (``kyutai/tts-voices`` names) for ``spec``.

    A voice file is named after the model it fits (``<voice>.<sig>@<epoch>.safetensors``,
    ``model_id`` of the model's ``config.json``, which is pulled first if missing).
    Cached files are not fetched again. Raises :class:`ModelError` on any failure.
    """
    from xswarm.models.resolve import cached_file

    if spec.voice_repo is None or spec.repo is None:
        raise ModelError(f"{spec.name} has no voices to pull (only Kyutai TTS models do)")
    if offline_mode():
        raise _offline_error(spec)
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import disable_progress_bars

    from xswarm.models.resolve import hf_cache_dir

    disable_progress_bars()
    config_path = cached_file(spec, CONFIG_FILE) or _download_one(spec, CONFIG_FILE, progress)
    try:
        model_id = json.loads(config_path.read_text(encoding="utf-8"))["model_id"]
        suffix = f".{model_id['sig']}@{model_id['epoch']}.safetensors"
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{config_path}: no model_id to name voice files ({error})") from None
    done: list[Path] = []
    for voice in voices:
        filename = voice + suffix
        found = try_to_load_from_cache(spec.voice_repo, filename, cache_dir=hf_cache_dir())
        if isinstance(found, str):
            path = Path(found)
            if progress is not None:
                size = path.stat().st_size
                progress(PullProgress(filename, size, size, finished=True))
        else:
            path = _download_one(spec, filename, progress, repo=spec.voice_repo)
        done.append(path)
    return done
