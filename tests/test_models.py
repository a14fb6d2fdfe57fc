"""Model registry, resolution, generated tiny models and the loaders (in process).

The generated ``tiny-random`` models come from tests/model_fixtures.py
(generated once per run). Bad inputs through the CLI are in
tests/test_models_cli.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from moshi_mlx import models as mm
from moshi_mlx.models.mimi import Mimi

from tests.model_fixtures import copy_model
from xswarm.errors import ExitCode, ModelError, UsageError
from xswarm.models import (
    REGISTRY,
    ResolvedModel,
    get_spec,
    load_codec,
    load_lm,
    load_text_tokenizer,
    resolve,
    status,
)
from xswarm.models.load import lm_config_of
from xswarm.models.mimi import pytorch_state_from_mlx, randomize, tiny_mimi_config
from xswarm.models.registry import MOSHIKO_CONFIG
from xswarm.models.resolve import resolve_directory
from xswarm.models.safetensors import read_header
from xswarm.models.tiny import RANDOM_1B_CONFIG, TINY_TEXT_CARD, generate

FRAME = 1920


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- registry ---------------------------------------------------------------


def test_builtin_moshiko_config_is_moshi_mlx_config_v0_1() -> None:
    assert mm.LmConfig.from_config_dict(dict(MOSHIKO_CONFIG)) == mm.config_v0_1()


def test_random_1b_config_is_moshi_mlx_config1b_202412() -> None:
    assert mm.LmConfig.from_config_dict(dict(RANDOM_1B_CONFIG)) == mm.config1b_202412()


def test_registry_covers_the_published_checkpoints() -> None:
    published = {s.name: s for s in REGISTRY.values() if not s.generated}
    for voice in ("moshiko", "moshika"):
        for q, lm_file in (("q4", "model.q4.safetensors"), ("q8", "model.q8.safetensors"),
                           ("bf16", "model.safetensors")):  # fmt: skip
            spec = published[f"{voice}-mlx-{q}"]
            assert (spec.repo, spec.kind, spec.quantization) == (
                f"kyutai/{voice}-mlx-{q}",
                "moshi",
                q,
            )
            assert spec.files == (
                lm_file,
                "tokenizer-e351c8d8-checkpoint125.safetensors",
                "tokenizer_spm_32k_3.model",
            )
    assert published["stt-1b-en_fr-mlx"].kind == "stt"
    assert published["stt-2.6b-en-mlx"].files[0] == "config.json"
    assert published["tts-1.6b-en_fr"].voice_repo == "kyutai/tts-voices"


def test_unknown_name_suggests_the_closest_names() -> None:
    with pytest.raises(
        UsageError, match=r"unknown model 'moshiko-q4': did you mean moshiko-mlx-q4"
    ):
        get_spec("moshiko-q4")
    with pytest.raises(UsageError) as info:
        resolve("tiny-randon")
    assert "did you mean tiny-random" in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


# --- resolution ---------------------------------------------------------------


def _fake_hf_snapshot(hf_home: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """Lay files out as huggingface_hub's cache does (blobs, snapshots, refs/main)."""
    root = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.read_bytes()
        (snapshot / name).write_bytes(data)
    return snapshot


def test_published_model_missing_from_cache_names_files_and_pull_command() -> None:
    with pytest.raises(ModelError) as info:
        resolve("moshiko-mlx-q4")
    assert info.value.message == (
        "model moshiko-mlx-q4 is not downloaded: missing model.q4.safetensors, "
        "tokenizer-e351c8d8-checkpoint125.safetensors, tokenizer_spm_32k_3.model from "
        "kyutai/moshiko-mlx-q4 in the Hugging Face cache: run `xswarm models pull moshiko-mlx-q4`"
    )
    assert info.value.exit_code == ExitCode.FAILURE


def test_published_model_resolves_from_the_hf_cache_without_network(
    tiny_random: ResolvedModel, isolated_home: Path
) -> None:
    snapshot = _fake_hf_snapshot(
        isolated_home / "hf",
        "kyutai/moshiko-mlx-q4",
        {
            "model.q4.safetensors": tiny_random.directory / "model.q4.safetensors",
            "tokenizer-e351c8d8-checkpoint125.safetensors": tiny_random.codec_weights,
            "tokenizer_spm_32k_3.model": tiny_random.text_tokenizer,
        },
    )
    resolved = resolve("moshiko-mlx-q4")
    assert resolved.directory == snapshot
    assert resolved.lm_weights == snapshot / "model.q4.safetensors"
    assert resolved.quantization == "q4"
    assert resolved.config_path is None and resolved.config["dim"] == 4096
    row = status(get_spec("moshiko-mlx-q4"))
    assert row.cached and row.path == str(snapshot)
    # tiny weights under the 7B name: the integrity check names the file and the cause
    with pytest.raises(
        ModelError, match=r"model\.q4\.safetensors: .* for the config of moshiko-mlx-q4"
    ):
        load_lm(resolved)


def test_stt_config_in_the_cache_names_the_files(
    tiny_random_stt: ResolvedModel, isolated_home: Path
) -> None:
    config = json.loads(tiny_random_stt.config_path.read_text())  # type: ignore[union-attr]
    config.pop("xswarm_mimi_config")
    config["mimi_name"] = "mimi-pytorch-e351c8d8@125.safetensors"
    snapshot = _fake_hf_snapshot(
        isolated_home / "hf",
        "kyutai/stt-1b-en_fr-mlx",
        {
            "config.json": json.dumps(config).encode(),
            "model.safetensors": tiny_random_stt.lm_weights,
            "mimi-pytorch-e351c8d8@125.safetensors": b"x",
            config["tokenizer_name"]: tiny_random_stt.text_tokenizer,
        },
    )
    resolved = resolve("stt-1b-en_fr-mlx")
    assert resolved.directory == snapshot
    assert resolved.kind == "stt"
    assert resolved.stt_config == {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 1.0}
    assert resolved.text_tokenizer.name == config["tokenizer_name"]


def test_directory_without_config_is_the_moshiko_layout(
    tmp_path: Path, tiny_random: ResolvedModel
) -> None:
    for name, source in (
        ("model.q8.safetensors", tiny_random.directory / "model.q8.safetensors"),
        ("tokenizer-e351c8d8-checkpoint125.safetensors", tiny_random.codec_weights),
        ("tokenizer_spm_32k_3.model", tiny_random.text_tokenizer),
    ):
        (tmp_path / name).write_bytes(source.read_bytes())
    resolved = resolve(str(tmp_path))
    assert resolved.lm_weights.name == "model.q8.safetensors"
    assert resolved.quantization == "q8"
    assert lm_config_of(resolved) == mm.config_v0_1()


def test_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"model directory .*nowhere does not exist"):
        resolve(str(tmp_path / "nowhere"))


def test_missing_file_is_named(tmp_path: Path, tiny_random: ResolvedModel) -> None:
    directory = copy_model(tiny_random, tmp_path / "m")
    (directory / "tokenizer_tiny_en_512.model").unlink()
    with pytest.raises(ModelError, match=r"missing tokenizer_tiny_en_512\.model in "):
        resolve_directory(directory)


def test_on_demand_random_models_are_not_generated_by_resolve() -> None:
    with pytest.raises(
        ModelError, match=r"random-7b-q4 is not generated yet .* `xswarm models pull random-7b-q4`"
    ):
        resolve("random-7b-q4")


def test_outdated_generated_models(isolated_home: Path, tiny_random: ResolvedModel) -> None:
    from xswarm.models import generated_dir
    from xswarm.models.tiny import GENERATOR_VERSION

    # an on-demand (large) model made by an older generator: reported, never deleted silently
    big = generated_dir("random-7b-q4")
    big.mkdir(parents=True)
    (big / "config.json").write_text(json.dumps({"xswarm_generated": {"version": 1}}))
    with pytest.raises(
        ModelError,
        match=rf"generated by an older xswarm \(generator v1, now v{GENERATOR_VERSION}\)",
    ):
        resolve("random-7b-q4")
    assert (big / "config.json").is_file()
    # a tiny one is simply made again
    stale = generated_dir("tiny-random-stt")
    copy_model(tiny_random, stale)
    config = json.loads((stale / "config.json").read_text())
    config["xswarm_generated"]["version"] = 1
    (stale / "config.json").write_text(json.dumps(config))
    again = resolve("tiny-random-stt")
    assert again.directory == stale
    assert again.config["xswarm_generated"]["version"] == GENERATOR_VERSION
    assert again.kind == "stt"


# --- tiny-random: generation and loading ------------------------------------------


def test_generation_is_deterministic(tmp_path: Path, tiny_models_dir: Path) -> None:
    again = generate("tiny-random", tmp_path / "again")
    first = tiny_models_dir / "tiny-random"
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert names == [
        "config.json",
        "mimi-tiny-random.safetensors",
        "model.q4.safetensors",
        "model.q8.safetensors",
        "model.safetensors",
        "tokenizer_tiny_en_512.model",
    ]
    for name in names:
        assert _sha(first / name) == _sha(again / name), name


def test_generated_lm_file_uses_mlx_naming_in_bf16(tiny_random: ResolvedModel) -> None:
    header = read_header(tiny_random.lm_weights)
    model = mm.Lm(lm_config_of(tiny_random))
    assert set(header.tensors) == {k for k, _ in tree_flatten(model.parameters())}
    assert {t.dtype for t in header.tensors.values()} == {"BF16"}
    assert header.tensors["transformer.layers.0.self_attn.in_proj.weight"].shape == (768, 256)


def _step_lm(model: mm.Lm, config: mm.LmConfig, steps: int = 4) -> list[int]:
    from moshi_mlx import utils

    mx.random.seed(7)
    gen = mm.LmGen(
        model=model,
        max_steps=steps + 1,
        text_sampler=utils.Sampler(),
        audio_sampler=utils.Sampler(),
        check=False,
    )
    tokens = []
    for _ in range(steps):
        codes = mx.zeros((1, config.other_codebooks), dtype=mx.int32)
        text = gen.step(codes)
        text = text[0] if isinstance(text, tuple) else text
        tokens.append(int(text[0].item()))
    return tokens


def test_tiny_random_loads_through_the_real_loader(tiny_random: ResolvedModel) -> None:
    progress: list[tuple[int, int]] = []
    model, config = load_lm(
        tiny_random, progress=lambda done, total: progress.append((done, total))
    )
    assert (config.transformer.d_model, config.audio_codebooks, config.depformer.num_slices) == (
        256,
        16,
        8,
    )
    total = read_header(tiny_random.lm_weights).data_bytes
    assert progress[0] == (0, total) and progress[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(progress))
    on_disk = mx.load(str(tiny_random.lm_weights))
    loaded = dict(tree_flatten(model.parameters()))
    assert loaded.keys() == on_disk.keys()
    assert all(mx.array_equal(loaded[k], on_disk[k]).item() for k in on_disk)
    tokens = _step_lm(model, config)
    assert all(0 <= t < TINY_TEXT_CARD for t in tokens)


@pytest.mark.parametrize(("bits", "group"), [(4, 32), (8, 64)])
def test_quantised_tiny_random_loads(tiny_random: ResolvedModel, bits: int, group: int) -> None:
    model, config = load_lm(tiny_random, quantize=bits)
    linear = model.transformer.layers[0].self_attn.in_proj
    assert isinstance(linear, nn.QuantizedLinear)
    assert (linear.bits, linear.group_size) == (bits, group)
    on_disk = mx.load(str(tiny_random.directory / f"model.q{bits}.safetensors"))
    loaded = dict(tree_flatten(model.parameters()))
    assert mx.array_equal(loaded["text_linear.weight"], on_disk["text_linear.weight"]).item()
    assert all(0 <= t < TINY_TEXT_CARD for t in _step_lm(model, config))


def test_bf16_only_checkpoint_is_quantised_in_memory(
    tmp_path: Path, tiny_random: ResolvedModel
) -> None:
    directory = copy_model(tiny_random, tmp_path / "m")
    (directory / "model.q8.safetensors").unlink()
    model, _ = load_lm(resolve_directory(directory), quantize=8)
    assert isinstance(model.text_linear, nn.QuantizedLinear) and model.text_linear.bits == 8


def test_quantised_checkpoint_cannot_be_loaded_at_other_bits(
    tmp_path: Path, tiny_random: ResolvedModel
) -> None:
    directory = copy_model(tiny_random, tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config["moshi_name"] = "model.q4.safetensors"
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "model.q8.safetensors").unlink()
    with pytest.raises(
        ModelError,
        match=r"holds 4-bit weights \(model\.q4\.safetensors\); it cannot be loaded as 8-bit",
    ):
        load_lm(resolve_directory(directory), quantize=8)


def test_tiny_random_stt_is_text_only_with_stt_config(tiny_random_stt: ResolvedModel) -> None:
    model, config = load_lm(tiny_random_stt)
    assert (config.depformer.num_slices, config.audio_codebooks, config.extra_heads_num_heads) == (
        0,
        32,
        4,
    )
    assert tiny_random_stt.stt_config == {
        "audio_delay_seconds": 0.5,
        "audio_silence_prefix_seconds": 1.0,
    }
    assert all(0 <= t < TINY_TEXT_CARD for t in _step_lm(model, config))


# --- tokenizer and codec -------------------------------------------------------


def test_text_tokenizer_matches_the_lm_vocabulary(tiny_random: ResolvedModel) -> None:
    tokenizer = load_text_tokenizer(tiny_random)
    assert tokenizer.vocab_size() == tiny_random.config["text_card"] == TINY_TEXT_CARD
    assert [tokenizer.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    text = "Good morning, how are you today?"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) < len(text) / 2  # real pieces, not characters


def test_tiny_codec_round_trips_the_published_naming() -> None:
    mx.random.seed(3)
    config = tiny_mimi_config()
    original = Mimi(config)
    randomize(original, 5)
    state = pytorch_state_from_mlx(original)
    assert "encoder_transformer.transformer.layers.0.self_attn.in_proj_weight" in state
    assert "quantizer.rvq_first.vq.layers.0._codebook._initialized" in state
    assert "decoder.model.2.convtr.convtr.weight" in state
    # PyTorch layouts: conv (out, in, kernel), transposed conv (in, out, kernel)
    assert state["encoder.model.0.conv.conv.weight"].shape == (4, 1, 7)
    assert state["decoder.model.2.convtr.convtr.weight"].shape == (64, 32, 16)


def test_full_size_mimi_naming_is_the_published_one() -> None:
    # tests/data/mimi_pytorch_manifest.json comes from PyTorch moshi (tools/mimi_manifest.py):
    # the generated full-size codec must have exactly its names and shapes, which is
    # what rustymimi and load_pytorch_weights read in the published file.
    from moshi_mlx.models.mimi import mimi_202407

    manifest = json.loads(
        (Path(__file__).parent / "data" / "mimi_pytorch_manifest.json").read_text()
    )
    ours = {k: list(v.shape) for k, v in pytorch_state_from_mlx(Mimi(mimi_202407(32))).items()}
    assert len(manifest) == 318
    assert ours == manifest


def test_tiny_codec_file_loads_with_load_pytorch_weights(tmp_path: Path) -> None:
    mx.random.seed(3)
    config = tiny_mimi_config()
    original = Mimi(config)
    randomize(original, 5)
    path = tmp_path / "mimi.safetensors"
    mx.save_safetensors(str(path), pytorch_state_from_mlx(original))
    loaded = Mimi(config)
    loaded.load_pytorch_weights(str(path), strict=True)
    a, b = dict(tree_flatten(original.parameters())), dict(tree_flatten(loaded.parameters()))
    assert a.keys() == b.keys()
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)


def test_codec_encodes_and_decodes_frames(tiny_random: ResolvedModel) -> None:
    codec = load_codec(tiny_random, num_codebooks=8)
    rng = np.random.default_rng(0)
    codes_seen = []
    for _ in range(3):
        codes = codec.encode_step((0.1 * rng.standard_normal(FRAME)).astype(np.float32))
        assert codes.shape == (8,) and codes.dtype == np.int32
        assert ((codes >= 0) & (codes < 2048)).all()
        pcm = codec.decode_step(codes)
        assert pcm.shape == (FRAME,) and pcm.dtype == np.float32 and np.isfinite(pcm).all()
        codes_seen.append(codes)
    assert len({c.tobytes() for c in codes_seen}) > 1  # random input, not a constant codebook
    with pytest.raises(ValueError, match="frames of 1920 samples"):
        codec.encode_step(np.zeros(960, dtype=np.float32))


def test_rustymimi_is_refused_for_a_tiny_codec(tiny_random: ResolvedModel) -> None:
    with pytest.raises(ModelError, match="rustymimi only runs the full-size codec"):
        load_codec(tiny_random, num_codebooks=8, backend="rust")


# --- damaged files (messages; the CLI tests check exit codes and stderr) ----------


def test_truncated_weights_are_named(tmp_path: Path, tiny_random: ResolvedModel) -> None:
    directory = copy_model(tiny_random, tmp_path / "m")
    path = directory / "model.safetensors"
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(
        ModelError, match=rf"model\.safetensors: truncated \({size - 1000} of {size} bytes\)"
    ):
        load_lm(resolve_directory(directory))


def test_shape_mismatch_names_the_tensor(tmp_path: Path, tiny_random: ResolvedModel) -> None:
    directory = copy_model(tiny_random, tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config["text_card"] = 640
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as info:
        load_lm(resolve_directory(directory))
    assert info.value.message.endswith(
        "model.safetensors: tensor depformer.slices.0.emb.weight has shape (513, 64), expected "
        f"(641, 64) for the config of {directory} (wrong model or quantisation?)"
    )


def test_garbage_tokenizer_is_named(tmp_path: Path, tiny_random: ResolvedModel) -> None:
    directory = copy_model(tiny_random, tmp_path / "m")
    (directory / "tokenizer_tiny_en_512.model").write_bytes(b"not a model")
    with pytest.raises(
        ModelError, match=r"tokenizer_tiny_en_512\.model: not a valid SentencePiece model"
    ):
        load_text_tokenizer(resolve_directory(directory))


# --- pull (the hub replaced by a fake; no network) ------------------------------


def test_pull_fetches_the_files_the_config_names_once(
    monkeypatch: pytest.MonkeyPatch, isolated_home: Path, tiny_random_stt: ResolvedModel
) -> None:
    import huggingface_hub

    from xswarm.models.pull import PullProgress, pull_files

    config = json.loads(tiny_random_stt.config_path.read_text())  # type: ignore[union-attr]
    config["tokenizer_name"] = "tokenizer_renamed_upstream.model"  # not the registry's guess
    hub = {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": tiny_random_stt.lm_weights.read_bytes(),
        "mimi-tiny-random.safetensors": tiny_random_stt.codec_weights.read_bytes(),
        "tokenizer_renamed_upstream.model": tiny_random_stt.text_tokenizer.read_bytes(),
    }
    fetched: list[str] = []

    class Metadata:
        def __init__(self, size: int) -> None:
            self.size = size

    def fake_metadata(url: str, **_: object) -> Metadata:
        return Metadata(len(hub[url.rsplit("/", 1)[1]]))

    def fake_download(repo: str, filename: str, *, cache_dir: Path, **_: object) -> str:
        fetched.append(filename)
        root = Path(cache_dir) / ("models--" + repo.replace("/", "--"))
        snapshot = root / "snapshots" / ("a" * 40)
        snapshot.mkdir(parents=True, exist_ok=True)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text("a" * 40)
        (snapshot / filename).write_bytes(hub[filename])
        return str(snapshot / filename)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake_metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    events: list[PullProgress] = []
    spec = get_spec("stt-1b-en_fr-mlx")
    pull_files(spec, progress=events.append)
    assert fetched == [
        "config.json",
        "model.safetensors",
        "mimi-tiny-random.safetensors",
        "tokenizer_renamed_upstream.model",
    ]
    finished = [e for e in events if e.finished]
    assert [(e.filename, e.done, e.total) for e in finished] == [
        (name, len(hub[name]), len(hub[name])) for name in fetched
    ]
    resolved = resolve("stt-1b-en_fr-mlx")
    assert resolved.text_tokenizer.name == "tokenizer_renamed_upstream.model"
    load_text_tokenizer(resolved)
    fetched.clear()
    pull_files(spec)  # everything cached: nothing fetched again
    assert fetched == []


# --- PyTorch-format LM (how the TTS checkpoint is published) ---------------------


def _pytorch_lm_state(model: mm.Lm, config: mm.LmConfig) -> dict[str, mx.array]:
    """An MLX Lm's weights in PyTorch moshi naming: the inverse of Lm.load_pytorch_weights."""
    params = dict(tree_flatten(model.parameters()))
    state: dict[str, mx.array] = {"out_norm.alpha": params["out_norm.weight"][None, None]}
    for name in ("text_emb.weight", "text_linear.weight"):
        state[name] = params[name]
    for i in range(config.audio_codebooks):
        state[f"emb.{i}.weight"] = params[f"audio_embs.{i}.weight"]
    for name, value in params.items():
        if name.startswith("transformer."):
            if name.endswith((".norm1.weight", ".norm2.weight")):
                state[name.replace(".weight", ".alpha")] = value[None, None]
            else:
                state[name.replace(".in_proj.weight", ".in_proj_weight")] = value
    slices = config.depformer.num_slices
    for i in range(slices):
        p = f"depformer.slices.{i}"
        state[f"depformer_in.{i}.weight"] = params[f"{p}.linear_in.weight"]
        state[f"linears.{i}.weight"] = params[f"{p}.linear_out.weight"]
        emb = "depformer_text_emb.weight" if i == 0 else f"depformer_emb.{i - 1}.weight"
        state[emb] = params[f"{p}.emb.weight"]
    for layer in range(config.depformer.transformer.num_layers):
        q = f"depformer.layers.{layer}"
        first = f"depformer.slices.0.transformer.layers.{layer}"
        state[f"{q}.norm1.alpha"] = params[f"{first}.norm1.weight"][None, None]
        state[f"{q}.norm2.alpha"] = params[f"{first}.norm2.weight"][None, None]
        for part in ("in_proj", "out_proj"):
            state[f"{q}.self_attn.{part}{'_weight' if part == 'in_proj' else '.weight'}"] = (
                mx.concatenate(
                    [
                        params[
                            f"depformer.slices.{i}.transformer.layers.{layer}.self_attn.{part}.weight"
                        ]
                        for i in range(slices)
                    ]
                )
            )
        for i in range(slices):
            p = f"depformer.slices.{i}.transformer.layers.{layer}"
            for lin in ("linear_in", "linear_out"):
                state[f"{q}.gating.{i}.{lin}.weight"] = params[f"{p}.gating.{lin}.weight"]
    return state


def test_pytorch_format_lm_loads_through_load_pytorch_weights(
    tmp_path: Path, tiny_random: ResolvedModel
) -> None:
    model, config = load_lm(tiny_random)
    # PyTorch naming has one norm per depformer layer, shared by the slices: the
    # generated norms are all ones, so nothing is lost going there and back.
    norms = [s.transformer.layers[0].norm1.weight for s in model.depformer.slices]
    assert all(mx.array_equal(n, norms[0]).item() for n in norms)
    directory = copy_model(tiny_random, tmp_path / "tts")
    raw = json.loads((directory / "config.json").read_text())
    raw.update(model_type="tts", moshi_name="tts_weights.safetensors")
    (directory / "config.json").write_text(json.dumps(raw))
    mx.save_safetensors(
        str(directory / "tts_weights.safetensors"), _pytorch_lm_state(model, config)
    )
    resolved = resolve_directory(directory)
    assert (resolved.kind, resolved.spec.weights_format) == ("tts", "pytorch")
    progress: list[tuple[int, int]] = []
    loaded, _ = load_lm(resolved, progress=lambda d, t: progress.append((d, t)))
    a, b = dict(tree_flatten(model.parameters())), dict(tree_flatten(loaded.parameters()))
    assert a.keys() == b.keys()
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)
    assert progress[-1][0] == progress[-1][1] > 0
