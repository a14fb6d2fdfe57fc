"""A tiny random chat model in mlx-lm's layout, for the ``mlx:PATH`` LLM tests.

Real chat models are gigabytes; this one is a 2-layer, 64-wide Llama with
random weights and a byte-level BPE tokenizer trained on two sentences, with a
chat template and an end-of-turn token: it loads through ``mlx_lm.load`` and
generates through ``mlx_lm.stream_generate`` like a published MLX model
(``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``), and says nonsense. About a second to make.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

END: Final = "<|end|>"  # end-of-turn token: the eos
CHAT_TEMPLATE: Final = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}" + END + "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tiny_chat_model(path: Path, *, seed: int = 0, chat_template: bool = True) -> Path:
    """Write the model into ``path`` (created) and return it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[END, "<|system|>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(
        ["hello there how are you today", "the weather is nice in london"], trainer
    )
    tokenizer.save(str(path / "tokenizer.json"))
    settings: dict[str, object] = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": END}
    if chat_template:
        settings["chat_template"] = CHAT_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(settings))
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": tokenizer.get_vocab_size(),
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "eos_token_id": tokenizer.token_to_id(END),
    }
    (path / "config.json").write_text(json.dumps(config))
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return path
