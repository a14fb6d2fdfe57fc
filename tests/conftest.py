"""Shared fixtures: every test gets a private XSWARM_HOME and HF cache.

Nothing a test does may touch the developer's real config, history or model
cache, and no test may reach the network (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.pulse",  # the PulseAudio null sink for @pytest.mark.pulse tests
    "tests.model_fixtures",  # tiny_random / tiny_random_stt: generated models, once per run
    "tests.llm_server",  # llm_server: an OpenAI-style streaming chat server on 127.0.0.1
    "tests.wheel",  # xswarm_wheel: the real wheel, built once per run
]


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("xswarm-home")
    monkeypatch.setenv("XSWARM_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("XSWARM_PERSONA", raising=False)
    monkeypatch.delenv("XSWARM_DEBUG", raising=False)
    return home
