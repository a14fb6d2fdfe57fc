"""Streaming Kyutai TTS (xswarm.tts) on the generated ``tiny-random-tts``.

The tiny model is loaded from its published-layout files (PyTorch-named LM,
config.json with tts_config/model_id/conditioners, voices in the
kyutai/tts-voices layout) by the real loaders. Random weights say nothing
sensible, but the state machine decides every word, so which words are spoken
and when is real behaviour. One stream is shared by the module (loading and
warming up costs about a second); each test starts its own answer.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.model_fixtures import copy_model
from xswarm.audio import FRAME_SAMPLES
from xswarm.errors import ModelError, UsageError
from xswarm.models import ResolvedModel
from xswarm.tts import TtsFrame, TtsStream, load_tts
from xswarm.tts.kyutai import FINAL_PADDING

VOICE = "vctk/p244_023.wav"
SEED = 1234
MAX_STEPS = 600  # cap on steps per answer in these tests: a bug is a failure, not a hang

WORDS = ["Hello", "there,", "this", "is", "a", "test", "of", "streaming", "speech."]


@pytest.fixture(scope="module")
def stream(tiny_models_dir: Path) -> Iterator[TtsStream]:
    tts = load_tts(str(tiny_models_dir / "tiny-random-tts"), VOICE, seed=SEED)
    yield tts


def run(tts: TtsStream, chunks: Sequence[str], *, end: bool = True) -> list[TtsFrame | None]:
    """One answer: start, push every chunk, end, step until done; every step's result."""
    tts.start()
    for chunk in chunks:
        tts.push(chunk)
    if end:
        tts.end()
    out: list[TtsFrame | None] = []
    while not tts.done:
        assert len(out) < MAX_STEPS, "the answer never finished"
        out.append(tts.step())
    return out


def spoken(frames: Sequence[TtsFrame | None]) -> list[str]:
    return [word for frame in frames if frame is not None for word in frame.words]


def test_tiny_model_files_are_in_the_published_layout(tiny_random_tts: ResolvedModel) -> None:
    import json

    from xswarm.models.safetensors import read_header

    config = json.loads((tiny_random_tts.directory / "config.json").read_text())
    assert config["tts_config"] == {"audio_delay": 1.28, "second_stream_ahead": 2}
    assert config["cross_attention"] is True and config["demux_second_stream"] is True
    assert config["conditioners"]["speaker_wavs"]["type"] == "tensor"
    assert config["conditioners"]["cfg"]["lut"]["possible_values"][2] == "2.0"
    assert config["fuser"]["cross"] == ["speaker_wavs"]
    assert tiny_random_tts.lm_weights.name == f"dsm_tts_{config['model_id']['sig']}@0.safetensors"
    names = read_header(tiny_random_tts.lm_weights).tensors
    # PyTorch naming, as moshi_mlx's load_pytorch_weights expects it
    for name in (
        "out_norm.alpha",
        "emb.0.weight",
        "depformer_in.5.weight",
        "depformer.layers.0.gating.5.linear_in.weight",
        "depformer_text_emb.out2.weight",
        "transformer.layers.1.cross_attention.in_proj_weight",
        "transformer.layers.0.norm1.alpha",
        "condition_provider.conditioners.speaker_wavs.output_proj.weight",
    ):
        assert name in names
    assert "depformer_in.6.weight" not in names  # 8 slices share 6 weight sets (the schedule)
    voice = tiny_random_tts.directory / "voices" / f"{VOICE}.7e57c0de@0.safetensors"
    assert read_header(voice).tensors["speaker_wavs"].shape == (1, 32, 10)


def test_load_by_name_and_alias(tiny_random_tts: ResolvedModel) -> None:
    tts = load_tts("tiny-random", None, seed=1)  # "tiny-random" means tiny-random-tts here
    assert tts.model.multi_speaker and tts.model.valid_cfg_conditionings
    assert tts.delay_steps == 16 + 2 + 1  # 1.28 s of text ahead, acoustic delay 2, this step
    assert tts.sample_rate == 24000


def test_words_pushed_in_chunks_are_spoken_in_order(stream: TtsStream) -> None:
    chunks = ["Hel", "lo there, thi", "s is", " a te", "st of stre", "aming speech."]
    frames = run(stream, chunks)
    assert spoken(frames) == WORDS
    audio = [f for f in frames if f is not None]
    assert all(f.pcm.dtype == np.float32 and f.pcm.shape == (FRAME_SAMPLES,) for f in audio)
    assert all(np.isfinite(f.pcm).all() for f in audio)
    assert np.concatenate([f.pcm for f in audio]).std() > 0  # not silence
    # no audio before the text-to-audio delay, then a frame on every step
    first = next(i for i, f in enumerate(frames) if f is not None)
    assert first == stream.delay_steps - 1
    assert all(f is not None for f in frames[first:])


def test_chunking_does_not_change_the_speech(stream: TtsStream) -> None:
    whole = run(stream, [" ".join(WORDS)])
    pieces = run(stream, [c for c in " ".join(WORDS)])  # one character per push
    assert [f is None for f in whole] == [f is None for f in pieces]
    for a, b in zip(whole, pieces, strict=True):
        if a is not None and b is not None:
            assert a.words == b.words
            np.testing.assert_array_equal(a.pcm, b.pcm)


def test_starved_stream_pads_instead_of_ending(stream: TtsStream) -> None:
    stream.start()
    stream.push("Hello there, how ")  # three words: the model needs two of lookahead
    starved = [stream.step() for _ in range(80)]
    assert not stream.done
    assert spoken(starved) == ["Hello"]  # "there," waits for two more words
    assert stream.queued_words == 2
    # the voice keeps going (padding), it does not stop
    assert all(f is not None for f in starved[stream.delay_steps - 1 :])
    stream.push("are you to")
    stream.push("day? ")
    more = [stream.step() for _ in range(80)]
    assert spoken(more) == ["there,", "how", "are"]  # "you" and "today?" need the end
    assert not stream.done
    stream.end()
    rest: list[TtsFrame | None] = []
    while not stream.done:
        assert len(rest) < MAX_STEPS
        rest.append(stream.step())
    assert spoken(rest) == ["you", "today?"]


def test_end_finishes_after_the_final_padding(stream: TtsStream) -> None:
    frames = run(stream, ["Hello there, this is the end."])
    audio = [f for f in frames if f is not None]
    last_word = max(i for i, f in enumerate(audio) if f.words)
    assert len(audio) - 1 - last_word >= FINAL_PADDING
    assert stream.done
    assert stream.step() is None  # nothing more once done
    assert stream.done


def test_cancel_then_start_begins_fresh(stream: TtsStream) -> None:
    reference = run(stream, ["Good evening, sir."])
    stream.start()
    stream.push("Something else entirely, that will be dropped ")
    for _ in range(30):
        stream.step()
    stream.cancel()
    assert stream.step() is None
    stream.push("late words after a barge-in ")  # ignored: no answer is started
    stream.end()
    assert not stream.done
    again = run(stream, ["Good evening, sir."])
    assert spoken(again) == ["Good", "evening,", "sir."]
    assert len(again) == len(reference)
    for a, b in zip(reference, again, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            np.testing.assert_array_equal(a.pcm, b.pcm)


def test_streaming_gives_the_tokens_of_moshi_mlx_generate(
    stream: TtsStream, tiny_random_tts: ResolvedModel
) -> None:
    """All text pushed at once: the same codes as moshi_mlx's TTSModel.generate, same seed."""
    import mlx.core as mx
    from moshi_mlx.models.mimi import Mimi
    from moshi_mlx.models.tts import TTSModel

    from xswarm.models import load_lm, load_text_tokenizer
    from xswarm.models.mimi import CONFIG_KEY, mimi_config_from_dict
    from xswarm.tts import voice_path

    text = "Welcome back! It is good to hear your voice again."
    frames = run(stream, [text])
    ours: list[np.ndarray] = []
    stream.start()
    stream.push(text)
    stream.end()
    while not stream.done:
        if stream.step() is not None:
            assert stream.last_codes is not None
            ours.append(stream.last_codes.copy())

    lm, _ = load_lm(tiny_random_tts)
    mimi = Mimi(mimi_config_from_dict(tiny_random_tts.config[CONFIG_KEY]))
    model = TTSModel(
        lm,
        mimi,
        load_text_tokenizer(tiny_random_tts),
        temp=0.6,
        max_padding=8,
        initial_padding=2,
        final_padding=FINAL_PADDING,
        raw_config=dict(tiny_random_tts.config),
    )
    entries = model.prepare_script([text], padding_between=1)
    attributes = model.make_condition_attributes([voice_path(tiny_random_tts, VOICE)], 2.0)
    mx.random.seed(SEED)
    result = model.generate([entries], [attributes])
    theirs = [np.array(frame).reshape(-1) for frame in result.frames]
    assert len(theirs) > 20
    assert len(ours) >= len(theirs)  # generate stops acoustic-delay frames before its own trim
    for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {index}")
    words = [(w, i) for i, f in enumerate(f for f in frames if f is not None) for w in f.words]
    assert words == [(w, step) for w, step in result.all_transcripts[0]]


def test_calls_from_another_thread_are_refused(stream: TtsStream) -> None:
    errors: list[BaseException] = []

    def other() -> None:
        try:
            stream.step()
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and "MLX thread" in str(errors[0])


def test_a_voice_embedding_file_path_works(tiny_random_tts: ResolvedModel, tmp_path: Path) -> None:
    source = tiny_random_tts.directory / "voices" / f"{VOICE}.7e57c0de@0.safetensors"
    mine = tmp_path / "my voice.safetensors"
    shutil.copyfile(source, mine)
    tts = load_tts("tiny-random-tts", str(mine), seed=SEED)
    assert spoken(run(tts, ["Hi there you."])) == ["Hi", "there", "you."]


def test_unknown_voice_is_one_line_naming_the_fix(tiny_random_tts: ResolvedModel) -> None:
    with pytest.raises(
        ModelError, match=r"voice 'vctk/nobody\.wav' of TTS model tiny-random-tts"
    ) as info:
        load_tts("tiny-random-tts", "vctk/nobody.wav")
    assert "\n" not in info.value.message
    assert "huggingface-cli download kyutai/tts-voices vctk/nobody.wav.7e57c0de@0.safetensors" in (
        info.value.message
    )
    with pytest.raises(ModelError, match=r"voice file /no/such\.safetensors does not exist"):
        load_tts("tiny-random-tts", "/no/such.safetensors")
    with pytest.raises(UsageError, match=r"voice 'a/\.\./x' is not a kyutai/tts-voices name"):
        load_tts("tiny-random-tts", "a/../x")


def test_missing_weights_are_one_line_naming_the_fix(
    tiny_random_tts: ResolvedModel, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match=r"`xswarm models pull tts-1.6b-en_fr`") as info:
        load_tts("tts-1.6b-en_fr", VOICE)  # offline: nothing in the test's HF cache
    assert "\n" not in info.value.message
    broken = copy_model(tiny_random_tts, tmp_path / "broken")
    (broken / tiny_random_tts.lm_weights.name).unlink()
    with pytest.raises(ModelError, match=r"missing dsm_tts_7e57c0de@0\.safetensors"):
        load_tts(str(broken), VOICE)


def test_a_model_that_is_not_a_tts_is_refused(tiny_random_stt: ResolvedModel) -> None:
    with pytest.raises(UsageError, match=r"model tiny-random-stt is a stt model, not a Kyutai TTS"):
        load_tts("tiny-random-stt", None)


def test_pulled_published_model_and_voice_load_from_the_hf_cache(
    monkeypatch: pytest.MonkeyPatch, tiny_random_tts: ResolvedModel
) -> None:
    """tts-1.6b-en_fr served by a fake hub with the tiny model's bytes: pull, then load by name."""
    from urllib.parse import unquote

    import huggingface_hub

    from xswarm.models import get_spec
    from xswarm.models.pull import pull_files, pull_voices

    voice_file = f"{VOICE}.7e57c0de@0.safetensors"
    directory = tiny_random_tts.directory
    hub = {
        ("kyutai/tts-1.6b-en_fr", name): (directory / name).read_bytes()
        for name in ("config.json", tiny_random_tts.lm_weights.name)
    }
    hub[("kyutai/tts-1.6b-en_fr", tiny_random_tts.codec_weights.name)] = (
        tiny_random_tts.codec_weights.read_bytes()
    )
    hub[("kyutai/tts-1.6b-en_fr", tiny_random_tts.text_tokenizer.name)] = (
        tiny_random_tts.text_tokenizer.read_bytes()
    )
    hub[("kyutai/tts-voices", voice_file)] = (directory / "voices" / voice_file).read_bytes()
    fetched: list[tuple[str, str]] = []

    class Metadata:
        def __init__(self, size: int) -> None:
            self.size = size

    def fake_metadata(url: str, **_: object) -> Metadata:
        repo_and_file = unquote(url.split("huggingface.co/", 1)[1])
        repo, filename = repo_and_file.split("/resolve/main/", 1)
        return Metadata(len(hub[(repo, filename)]))

    def fake_download(repo: str, filename: str, *, cache_dir: Path, **_: object) -> str:
        fetched.append((repo, filename))
        root = Path(cache_dir) / ("models--" + repo.replace("/", "--"))
        snapshot = root / "snapshots" / ("b" * 40)
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text("b" * 40)
        (snapshot / filename).write_bytes(hub[(repo, filename)])
        return str(snapshot / filename)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake_metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    spec = get_spec("tts-1.6b-en_fr")
    pull_files(spec)
    with pytest.raises(ModelError, match=r"`xswarm models pull tts-1.6b-en_fr --voice vctk/p244"):
        load_tts("tts-1.6b-en_fr", VOICE)  # model here, voice not yet
    pull_voices(spec, [VOICE])
    assert fetched[-1] == ("kyutai/tts-voices", voice_file)
    fetched.clear()
    pull_voices(spec, [VOICE])  # cached: not fetched again
    assert fetched == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tts = load_tts("tts-1.6b-en_fr", VOICE, seed=SEED)
    assert spoken(run(tts, ["Good morning."])) == ["Good", "morning."]


def test_pull_voice_bad_inputs_through_the_cli() -> None:
    from tests.cli_helpers import run_xswarm

    result = run_xswarm("models", "pull", "tiny-random", "--voice", VOICE)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "--voice is for published Kyutai TTS models (tts-1.6b-en_fr); tiny-random "
            "has no voices to pull"
        )
    )
    result = run_xswarm("models", "pull", "tts-1.6b-en_fr", "--voice", VOICE)
    assert result.returncode == 1
    assert "offline mode (HF_HUB_OFFLINE is set)" in result.stderr


def test_first_audio_is_the_model_delay_in_steps(stream: TtsStream) -> None:
    from xswarm.tts.kyutai import INITIAL_PADDING
    from xswarm.tts.latency import measure_first_audio

    for end in (True, False):  # ended, or streaming with enough lookahead: the same
        first = measure_first_audio(stream, "Good evening, how are you today?", end=end)
        assert first.steps_to_audio == stream.delay_steps
        assert first.steps_to_first_word == stream.delay_steps + INITIAL_PADDING
        assert 0 < first.seconds_to_audio < first.seconds_to_first_word
    with pytest.raises(RuntimeError, match="no word was heard within 40 steps"):
        measure_first_audio(stream, "Two words", end=False, max_steps=40)  # below the lookahead
    assert stream.step() is None  # left cancelled


async def test_on_the_mlx_worker_as_the_cascade_runs_it(tiny_random_tts: ResolvedModel) -> None:
    """Loaded and stepped on the MLX worker thread from trio, the way the cascade drives it."""
    import functools

    import trio

    from xswarm.inference.worker import open_mlx_worker

    with trio.fail_after(60):
        async with open_mlx_worker() as worker:
            tts = await worker.run(functools.partial(load_tts, "tiny-random-tts", VOICE, seed=5))
            assert tts.thread_ident == worker.thread_ident
            await worker.run(tts.start)
            for chunk in ("Good ", "after", "noon to you. "):
                await worker.run(tts.push, chunk)
            await worker.run(tts.end)
            words: list[str] = []
            while not await worker.run(lambda: tts.done):
                frame = await worker.run(tts.step)
                if frame is not None:
                    words.extend(frame.words)
            assert words == ["Good", "afternoon", "to", "you."]
