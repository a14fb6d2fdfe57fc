"""The text LLM of the cascade mode: a streaming chat client and its prompt.

- :mod:`xswarm.llm.client`: :class:`ChatMessage`, :class:`LlmConfig`,
  :class:`LlmError`, the :class:`ChatClient` protocol and :func:`open_chat`;
- :mod:`xswarm.llm.openai`: any OpenAI-compatible ``/chat/completions``
  endpoint, streamed over HTTP (httpx under trio);
- :mod:`xswarm.llm.mlx`: an MLX model in this process (``mlx:PATH``), with
  ``mlx-lm`` installed;
- :mod:`xswarm.llm.prompt`: :func:`build_messages` and :data:`SPEECH_RULES`.

Importing this package is cheap: httpx and MLX are imported when a client opens.
"""

from xswarm.llm.client import (
    API_KEY_VARIABLES,
    ChatClient,
    ChatMessage,
    LlmConfig,
    LlmError,
    api_key_from_env,
    open_chat,
)
from xswarm.llm.prompt import SPEECH_RULES, build_messages, remembered_facts

__all__ = [
    "API_KEY_VARIABLES",
    "SPEECH_RULES",
    "ChatClient",
    "ChatMessage",
    "LlmConfig",
    "LlmError",
    "api_key_from_env",
    "build_messages",
    "open_chat",
    "remembered_facts",
]
