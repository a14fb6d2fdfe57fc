"""``talk --mode cascade --llm-model mlx:PATH``: an in-process MLX LLM on the session's MLX thread.

Separate from tests/test_cascade.py because mlx-lm and transformers take
seconds to import. The model is a tiny random chat model (tests/tiny_llm.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cascade import QUESTION, speech, talk


async def test_an_in_process_mlx_llm_shares_the_one_mlx_thread(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_random_stt: object,
    tiny_random_tts: object,
) -> None:
    from tests.tiny_llm import make_tiny_chat_model

    model = make_tiny_chat_model(tmp_path / "chat")
    speech(tmp_path, (QUESTION, 1.0))
    run = await talk(tmp_path, monkeypatch, "", llm_model=f"mlx:{model}", llm_timeout=30.0)
    (turn,) = run.turns
    assert turn["end"] == "done" and turn["error"] is None, run.stderr
    assert turn["llm_first_token_ms"] is not None
    assert run.summary["llm_errors"] == 0
