"""Conversation STT (xswarm.stt.stream): sphinx-en on flite speech, Kyutai on tiny-random-stt.

The sphinx tests check words and times on real (synthesised) speech. The
Kyutai tests run the generated tiny-random-stt (random weights, real
layout, real tiny tokenizer and codec): its words are noise, so they check
that the stream computes exactly what the file transcriber and moshi_mlx's
``LmGen.step_with_extra_heads`` compute on the same audio.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
import soxr
from moshi_mlx import models as mm
from moshi_mlx import utils as mm_utils

from tests.speech import SpokenFile, flite_speech, normalise
from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from xswarm.errors import XswarmError
from xswarm.stt import kyutai
from xswarm.stt.engine import AudioStream, StreamEnd, WordEvent
from xswarm.stt.kyutai import END_OF_TURN_HEAD, KyutaiModel, KyutaiSttEngine, load_kyutai_model
from xswarm.stt.sphinx import SphinxEngine
from xswarm.stt.stream import (
    KyutaiSttStream,
    SphinxSttStream,
    SttStream,
    SttUpdate,
    open_stt_stream,
)
from xswarm.transcript import Word

SLACK = 0.15  # s a sphinx word may reach outside the measured speech span (VAD pre-roll, rounding)


def frames_of(audio: np.ndarray) -> list[np.ndarray]:
    """Whole 80 ms frames, the last one zero-padded."""
    padded = np.pad(audio, (0, -len(audio) % FRAME_SAMPLES)).astype(np.float32)
    return [padded[i : i + FRAME_SAMPLES] for i in range(0, len(padded), FRAME_SAMPLES)]


def speech_24k(spoken: SpokenFile) -> np.ndarray:
    audio, rate = sf.read(spoken.path, dtype="float32")
    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def feed_all(stream: SttStream, frames: list[np.ndarray]) -> list[SttUpdate]:
    return [stream.feed(frame) for frame in frames]


def words_of(updates: list[SttUpdate]) -> list[Word]:
    return [word for update in updates for word in update.words]


def assert_increasing(words: list[Word]) -> None:
    for before, after in itertools.pairwise(words):
        assert before.start <= before.end <= after.start <= after.end


# --- sphinx-en on flite speech ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sphinx() -> SphinxEngine:
    return SphinxEngine()


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> list[SpokenFile]:
    directory = tmp_path_factory.mktemp("flite-stream")
    texts = ("the weather is nice today", "please open the window")
    # A short tail: the turn ends right after the last word, before the VAD has
    # seen enough silence to end the utterance by itself.
    return [
        flite_speech(text, directory / f"q{i}.wav", lead_seconds=0.5, tail_seconds=0.05)
        for i, text in enumerate(texts)
    ]


def test_sphinx_stream_gives_the_sentence_and_flush_releases_the_last_words(
    sphinx: SphinxEngine, sentences: list[SpokenFile]
) -> None:
    spoken = sentences[0]
    stream = SphinxSttStream(sphinx)
    assert (stream.name, stream.has_vad) == ("sphinx-en", False)
    updates = feed_all(stream, frames_of(speech_24k(spoken)))
    assert all(update.end_of_turn is None for update in updates)
    before_flush = words_of(updates)
    flushed = stream.flush()
    words = before_flush + list(flushed)
    assert [w.text for w in words] == normalise(spoken.text)
    # The VAD had not ended the utterance: without the flush the last word would be held back.
    assert flushed and flushed[-1].text == "today"
    assert_increasing(words)
    assert spoken.speech_start - SLACK <= words[0].start
    assert words[-1].end <= spoken.speech_end + SLACK


def test_sphinx_stream_second_turn_times_continue_from_real_time(
    sphinx: SphinxEngine, sentences: list[SpokenFile]
) -> None:
    first, second = sentences
    stream = SphinxSttStream(sphinx)
    first_frames = frames_of(speech_24k(first))
    feed_all(stream, first_frames)
    turn1 = list(stream.flush())
    offset = len(first_frames) * FRAME_SECONDS  # the flush's silence is not input: not counted
    turn2 = words_of(feed_all(stream, frames_of(speech_24k(second))))
    turn2 += stream.flush()
    assert [w.text for w in turn1] == normalise(first.text)
    assert [w.text for w in turn2] == normalise(second.text)
    assert_increasing(turn1 + turn2)
    assert offset + second.speech_start - SLACK <= turn2[0].start
    assert turn2[-1].end <= offset + second.speech_end + SLACK


def test_sphinx_flush_on_silence_returns_nothing_and_reset_restarts_time(
    sphinx: SphinxEngine, sentences: list[SpokenFile]
) -> None:
    stream = SphinxSttStream(sphinx)
    silence = [np.zeros(FRAME_SAMPLES, np.float32)] * 10
    assert words_of(feed_all(stream, silence)) == []
    assert stream.flush() == ()
    stream.reset()
    spoken = sentences[1]
    words = words_of(feed_all(stream, frames_of(speech_24k(spoken)))) + list(stream.flush())
    assert [w.text for w in words] == normalise(spoken.text)
    assert words[0].start >= spoken.speech_start - SLACK  # not shifted by the frames before reset


def test_sphinx_flush_inside_speech_leaves_nothing_behind_for_the_next_turn(
    sphinx: SphinxEngine, sentences: list[SpokenFile], tmp_path: Path
) -> None:
    """A flush that ends the utterance while the VAD is still inside the speech region.

    (flush_frames 0 forces it; with 5 silent frames it happens when the VAD is
    slow to call the end.) Turn 2 starts speaking at once. What the VAD still
    held of turn 1 must not come out in turn 2, and turn 2's times must be its own.
    """
    first = sentences[0]
    second = flite_speech("please open the window", tmp_path / "now.wav", lead_seconds=0.0)
    stream = SphinxSttStream(sphinx)
    stream.flush_frames = 0
    first_frames = frames_of(speech_24k(first))
    feed_all(stream, first_frames)
    stream.flush()
    turn2 = words_of(feed_all(stream, frames_of(speech_24k(second)))) + list(stream.flush())
    offset = len(first_frames) * FRAME_SECONDS
    assert [w.text for w in turn2] == normalise(second.text)
    assert offset + second.speech_start - SLACK <= turn2[0].start
    assert turn2[-1].end <= offset + second.speech_end + SLACK


# --- Kyutai on tiny-random-stt -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_models_dir: Path) -> KyutaiModel:
    """tiny-random-stt loaded once (by directory, as ``--stt-model PATH`` would)."""
    return load_kyutai_model(str(tiny_models_dir / "tiny-random-stt"))


@pytest.fixture(scope="module")
def speech_audio(sentences: list[SpokenFile]) -> np.ndarray:
    return speech_24k(sentences[0])


class TokenSpy:
    """Records every text token ``_Batch`` computes (both step methods), row 0."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tokens: list[int] = []
        step, with_heads = kyutai._Batch.step, kyutai._Batch.step_with_end_of_turn

        def spy_step(batch: kyutai._Batch, frames: list) -> list[int]:
            tokens = step(batch, frames)
            self.tokens.append(tokens[0])
            return tokens

        def spy_heads(batch: kyutai._Batch, frames: list) -> tuple[list[int], list[float]]:
            tokens, ended = with_heads(batch, frames)
            self.tokens.append(tokens[0])
            return tokens, ended

        monkeypatch.setattr(kyutai._Batch, "step", spy_step)
        monkeypatch.setattr(kyutai._Batch, "step_with_end_of_turn", spy_heads)


def file_words(model: KyutaiModel, audio: np.ndarray) -> list[Word]:
    engine = KyutaiSttEngine(
        model.lm, model.tokenizer, model.codec_factory, model.stt, name=model.name, batch_size=1
    )
    frames = frames_of(audio)
    events = list(engine.transcribe([AudioStream(0, "in.wav", iter(frames), lambda: len(audio))]))
    assert isinstance(events[-1], StreamEnd) and events[-1].error is None
    return [event.word for event in events if isinstance(event, WordEvent)]


def test_kyutai_stream_computes_what_the_file_transcriber_computes(
    tiny_model: KyutaiModel, speech_audio: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = speech_audio[: len(speech_audio) // FRAME_SAMPLES * FRAME_SAMPLES]  # whole frames
    spy = TokenSpy(monkeypatch)
    reference = file_words(tiny_model, audio)
    file_tokens, spy.tokens = spy.tokens, []

    stream = KyutaiSttStream(tiny_model)
    assert stream.flush_frames == 8  # delay 0.5 s: ceil(0.5 / 0.08) + 1
    fed = words_of(feed_all(stream, frames_of(audio)))
    flushed = list(stream.flush())

    # The stream's steps are the file's first steps (prefix, audio, then the same silence).
    assert spy.tokens == file_tokens[: len(spy.tokens)]
    prefix_steps = tiny_model.stt.prefix_samples // FRAME_SAMPLES
    assert len(spy.tokens) == prefix_steps + len(audio) // FRAME_SAMPLES + stream.flush_frames
    assert fed + flushed, "random weights still say something"
    # Same words at the same times; the flush ends the last word where the file
    # (which goes on decoding silence) may still extend it.
    assert fed + flushed[:-1] == reference[: len(fed) + len(flushed) - 1]
    last, same = flushed[-1], reference[len(fed) + len(flushed) - 1]
    assert last.start == same.start
    assert last.end <= len(audio) / SAMPLE_RATE


def test_kyutai_end_of_turn_is_moshi_mlx_step_with_extra_heads(
    tiny_model: KyutaiModel, speech_audio: np.ndarray
) -> None:
    """Every frame's end_of_turn is ``vad_heads[2][0, 0, 0]`` of LmGen.step_with_extra_heads."""
    codes: list[np.ndarray] = []

    def recording_codec() -> kyutai.Codec:
        codec = tiny_model.codec_factory()
        encode = codec.encode_step

        class Recording:
            def encode_step(self, pcm: np.ndarray) -> np.ndarray:
                result = np.asarray(encode(pcm)).reshape(-1)
                codes.append(result)
                return result

            def reset(self) -> None:
                codec.reset()

        return Recording()

    stream = KyutaiSttStream(dataclasses.replace(tiny_model, codec_factory=recording_codec))
    assert stream.has_vad
    updates = feed_all(stream, frames_of(speech_audio[: 40 * FRAME_SAMPLES]))
    ours = [u.end_of_turn for u in updates]
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in ours)

    lm = tiny_model.lm
    lm.transformer_cache = lm.transformer.make_rot_cache()  # fresh, as loading gives
    gen = mm.LmGen(
        model=lm, max_steps=len(codes), text_sampler=mm_utils.Sampler(temp=0),
        audio_sampler=mm_utils.Sampler(temp=0), check=False,
    )
    reference = []
    for code in codes:
        other = mx.array(code[None, :, None].astype(np.int32)).transpose(0, 2, 1)
        _, vad_heads = gen.step_with_extra_heads(other[0])
        reference.append(vad_heads[END_OF_TURN_HEAD][0, 0, 0].item())
    prefix_steps = len(codes) - len(updates)
    assert ours == reference[prefix_steps:]
    assert len(set(ours)) > 1  # it moves with the audio


def test_kyutai_flush_does_not_shift_later_times(
    tiny_model: KyutaiModel, speech_audio: np.ndarray
) -> None:
    """Flush silence is not input: the next turn's words are stamped in real time.

    Stream A flushes between two turns; stream B is fed the same silence as
    input. The model hears the same samples, so B's second-turn words are A's,
    ``flush_frames`` x 80 ms later.
    """
    turn = frames_of(speech_audio)
    with_flush = KyutaiSttStream(tiny_model)
    feed_all(with_flush, turn)
    first = list(with_flush.flush())
    second = words_of(feed_all(with_flush, turn))

    as_input = KyutaiSttStream(tiny_model)
    silence = [np.zeros(FRAME_SAMPLES, np.float32)] * as_input.flush_frames
    feed_all(as_input, turn + silence)
    second_b = words_of(feed_all(as_input, turn))

    shift = with_flush.flush_frames * FRAME_SECONDS
    assert len(second) == len(second_b) >= 2
    # B's first word began in the silence and goes on; A's flush ended it there.
    assert second_b[0].text.endswith(second[0].text)
    assert second[0].end == pytest.approx(second_b[0].end - shift, abs=1e-9)
    for a, b in zip(second[1:], second_b[1:], strict=True):
        assert a.text == b.text
        assert a.start == pytest.approx(b.start - shift, abs=1e-9)
        assert a.end == pytest.approx(b.end - shift, abs=1e-9)
    heard = 2 * len(turn) * FRAME_SECONDS
    assert_increasing(first + second)
    assert all(0.0 <= w.start <= w.end <= heard for w in first + second)
    assert first[-1].end <= len(turn) * FRAME_SECONDS  # nothing stamped inside the flush


def test_open_stt_stream_by_name_tiny_random_means_the_stt_model(tiny_random_stt: object) -> None:
    stream = open_stt_stream("tiny-random")
    assert isinstance(stream, KyutaiSttStream)
    assert (stream.name, stream.has_vad, stream.flush_frames) == ("tiny-random-stt", True, 8)
    update = stream.feed(np.zeros(FRAME_SAMPLES, np.float32))
    assert isinstance(update.end_of_turn, float)
    assert isinstance(open_stt_stream("sphinx-en"), SphinxSttStream)


@pytest.mark.parametrize(
    ("model", "message", "exit_code"),
    [
        ("stt-nope", "unknown speech-to-text model 'stt-nope': choose sphinx-en, stt-1b-en_fr", 2),
        ("sphinx", "did you mean sphinx-en?", 2),
        ("", "no speech-to-text model named: choose sphinx-en", 2),
        ("moshiko-mlx-q4", "moshiko-mlx-q4 is a moshi model, not speech-to-text: choose", 2),
        ("./no/such/dir", "model directory ./no/such/dir does not exist", 2),
        ("stt-1b-en_fr-mlx", "run `xswarm models pull stt-1b-en_fr-mlx`", 1),
    ],
)
def test_bad_model_is_a_one_line_error(model: str, message: str, exit_code: int) -> None:
    with pytest.raises(XswarmError) as caught:
        open_stt_stream(model)
    assert message in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == exit_code


@pytest.mark.parametrize(
    "opener", [KyutaiSttStream, lambda _: SphinxSttStream(SphinxEngine())], ids=["kyutai", "sphinx"]
)
def test_a_frame_of_the_wrong_size_is_refused(
    tiny_model: KyutaiModel, opener: Callable[[KyutaiModel], SttStream]
) -> None:
    stream = opener(tiny_model)
    with pytest.raises(ValueError, match="1920 samples"):
        stream.feed(np.zeros(1000, np.float32))


async def test_kyutai_stream_on_the_mlx_worker_thread(
    tiny_random_stt: object, speech_audio: np.ndarray
) -> None:
    """The cascade's way: open, feed and flush all on the one MLX thread, awaited from Trio."""
    import threading

    import trio

    from xswarm.inference.worker import open_mlx_worker

    threads: set[str] = set()

    def feed_on_thread(stream: SttStream, frame: np.ndarray) -> SttUpdate:
        threads.add(threading.current_thread().name)
        return stream.feed(frame)

    frames = frames_of(speech_audio)
    with trio.fail_after(60):
        async with open_mlx_worker() as worker:
            stream = await worker.run(open_stt_stream, "tiny-random-stt")
            updates = [await worker.run(feed_on_thread, stream, frame) for frame in frames]
            flushed = await worker.run(stream.flush)
    assert threads == {"xswarm-mlx"}
    words = words_of(updates) + list(flushed)
    assert words and all(w.end <= len(frames) * FRAME_SECONDS for w in words)
    assert all(isinstance(u.end_of_turn, float) for u in updates)
