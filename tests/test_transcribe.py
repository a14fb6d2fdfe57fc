"""Engines and the file loop: sphinx-en accuracy on flite speech, Kyutai batching, bad inputs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from moshi_mlx import models as mm
from moshi_mlx import utils as mm_utils

from tests.speech import SENTENCES, flite_speech, word_errors
from xswarm.errors import UsageError, XswarmError
from xswarm.models.tiny import TINY_STT_CONFIG
from xswarm.stt.engine import AudioStream, StreamEnd, WordEvent
from xswarm.stt.kyutai import KyutaiSttEngine, SttConfig, _Batch
from xswarm.stt.sphinx import SphinxEngine
from xswarm.transcribe import TranscribeOptions, transcribe_files
from xswarm.transcript import Word

# --- sphinx-en on flite speech -------------------------------------------------------------

WER_BOUND = 0.20  # see test_sphinx_accuracy_on_flite_speech
SLACK = 0.1  # s a word may reach past the measured speech span (see the test)


@pytest.fixture(scope="module")
def sphinx() -> SphinxEngine:
    return SphinxEngine()


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> list:
    directory = tmp_path_factory.mktemp("flite")
    return [
        flite_speech(text, directory / f"s{i:02d}.wav", lead_seconds=1.0, tail_seconds=0.7)
        for i, text in enumerate(SENTENCES)
    ]


def run_files(paths: list[str], engine, **options) -> tuple[list[dict], list[str], int]:
    out = io.StringIO()
    errors: list[str] = []
    failures = transcribe_files(
        paths, engine, TranscribeOptions(format="jsonl", **options), stdout=out,
        report=lambda e: errors.append(e.message),
    )
    return [json.loads(line) for line in out.getvalue().splitlines()], errors, failures


def test_sphinx_accuracy_on_flite_speech(sphinx: SphinxEngine, spoken: list, capsys) -> None:
    """WER over 22 sentences (119 words) of flite's slt voice, and word times in the speech.

    The bound: pocketsphinx itself, decoding each whole 16 kHz file as one
    utterance (no resampling, no VAD), gets 17 of these 119 words wrong (WER
    0.143; "she reads a book" -> "series of blood"): that is the model's
    limit, not ours. Our pipeline (24 kHz frames -> soxr -> VAD utterances
    with pre-roll) measured 0.126. We allow 0.20: room for a different
    pocketsphinx build, while a broken pipeline (wrong rate, int16 scaling,
    clipped utterance starts) measured 0.23-1.0.
    """
    segments, errors, failures = run_files([str(s.path) for s in spoken], sphinx)
    assert failures == 0 and errors == []
    total_errors = total_words = 0
    worst = 0.0  # s, furthest a word reached into the added silence
    for item in spoken:
        mine = [s for s in segments if s["file"] == str(item.path)]
        text = " ".join(s["text"] for s in mine)
        wrong, count = word_errors(item.text, text)
        total_errors += wrong
        total_words += count
        words = [w for s in mine for w in s["words"]]
        assert words, f"nothing recognised in {item.text!r}"
        # every word inside the spoken span, not in the silences we added around it;
        # SLACK covers the decoder's 10 ms frames and its word-boundary guesses
        assert words[0]["start"] >= item.speech_start - SLACK, (item.text, words[0])
        assert words[-1]["end"] <= item.speech_end + SLACK, (item.text, words[-1])
        worst = max(
            worst, item.speech_start - words[0]["start"], words[-1]["end"] - item.speech_end
        )
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
        assert all(w["start"] <= w["end"] for w in words)
    wer = total_errors / total_words
    with capsys.disabled():
        print(f"\nsphinx-en WER on {len(spoken)} flite sentences: {wer:.3f} "
              f"({total_errors}/{total_words} words); "
              f"words reach at most {worst * 1000:.0f} ms into the added silence")
    assert total_words >= 100
    assert wer <= WER_BOUND


def test_sphinx_silence_gives_no_segments_and_odd_inputs_work(
    sphinx: SphinxEngine, spoken: list, tmp_path: Path
) -> None:
    import soxr

    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(48_000, np.float32), 16_000)
    first, rate = sf.read(spoken[0].path, dtype="float32")
    second, _ = sf.read(spoken[1].path, dtype="float32")
    speech = np.concatenate([first, second])
    said = f"{spoken[0].text} {spoken[1].text}"
    clipped = tmp_path / "clipped.wav"
    sf.write(clipped, np.clip(speech * 2, -1, 1), rate)  # the loudest peaks cut flat
    narrow = tmp_path / "8k.wav"
    sf.write(narrow, soxr.resample(speech, rate, 8_000), 8_000)
    wide = tmp_path / "96k.flac"
    sf.write(wide, soxr.resample(speech, rate, 96_000), 96_000)
    surround = tmp_path / "six.wav"
    sf.write(surround, np.repeat(speech[:, None], 6, axis=1) / 2, rate, subtype="FLOAT")
    paths = [str(p) for p in (silence, clipped, narrow, wide, surround)]
    segments, errors, failures = run_files(paths, sphinx)
    assert failures == 0 and errors == []
    by_file = {p: " ".join(s["text"] for s in segments if s["file"] == p) for p in paths}
    assert by_file[str(silence)] == ""
    # lossless conversions decode like the original; clipping costs some words; 8 kHz
    # audio has nothing above 4 kHz, which pocketsphinx's 16 kHz model relies on
    # (measured 7 of 9 words wrong, "the weather is" right): decoded, not accurate
    cases = ((clipped, 2 / 3), (narrow, 0.8), (wide, 1 / 3), (surround, 1 / 3))
    for path, allowed in cases:
        wrong, count = word_errors(said, by_file[str(path)])
        assert wrong <= allowed * count, (path, by_file[str(path)])


def test_bad_inputs_fail_alone(sphinx: SphinxEngine, spoken: list, tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    good = str(spoken[1].path)
    paths = [str(tmp_path / "missing.wav"), str(tmp_path), good, str(empty), str(text)]
    segments, errors, failures = run_files(paths, sphinx)
    assert failures == 4
    assert [e.split(":")[0] for e in errors] == [p for p in paths if p != good]
    assert " ".join(s["text"] for s in segments) == spoken[1].text


def failing_frames(frames: int) -> Iterator[np.ndarray]:
    for _ in range(frames):
        yield np.zeros(1920, np.float32)
    raise UsageError("broken.wav: NaN samples at 0.40 s")


def test_a_stream_failing_midway_ends_alone(sphinx: SphinxEngine, spoken: list) -> None:
    speech, rate = sf.read(spoken[2].path, dtype="float32")
    import soxr

    good = soxr.resample(speech, rate, 24_000).astype(np.float32)
    frames = [np.pad(good[i : i + 1920], (0, max(0, i + 1920 - len(good))))
              for i in range(0, len(good), 1920)]
    events = list(sphinx.transcribe([
        AudioStream(0, "broken.wav", failing_frames(5)),
        AudioStream(1, "good.wav", iter(frames), lambda: len(good)),
    ]))
    ends = [e for e in events if isinstance(e, StreamEnd)]
    assert [(e.stream, type(e.error)) for e in ends] == [(0, UsageError), (1, type(None))]
    assert ends[1].duration == pytest.approx(len(good) / 24_000)
    text = " ".join(e.word.text for e in events if isinstance(e, WordEvent) and e.stream == 1)
    assert text == spoken[2].text


# --- Kyutai engine on a tiny random STT-shaped LM ------------------------------------------


class Pieces:
    """A piece table for the tiny LM's 512 text tokens: every third piece starts a word."""

    def id_to_piece(self, id: int) -> str:
        if id < 4:
            return ["<unk>", "<s>", "</s>", "<pad>"][id]
        return f"▁w{id}" if id % 3 == 0 else f"x{id}"

    def decode(self, ids: list[int]) -> str:
        return "".join(self.id_to_piece(i) for i in ids if i >= 4).replace("▁", " ").strip()


class EnergyCodec:
    """A stand-in for Mimi: codes depend on the frame's samples and on the stream's past."""

    def __init__(self) -> None:
        self.state = 0

    def encode_step(self, pcm: np.ndarray) -> np.ndarray:
        energy = int(np.abs(pcm).sum() * 1000)
        self.state = (self.state * 31 + energy) % 100_003
        return (np.arange(32) * 97 + self.state) % 2048

    def reset(self) -> None:
        self.state = 0


@pytest.fixture(scope="module")
def tiny_lm() -> mm.Lm:
    mx.random.seed(7)
    lm = mm.Lm(mm.LmConfig.from_config_dict(dict(TINY_STT_CONFIG)))
    lm.set_dtype(mx.bfloat16)
    mx.eval(lm.parameters())
    return lm


STT = SttConfig.from_model_config(TINY_STT_CONFIG, model="tiny")


def noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(24_000 * seconds)) * 0.1).astype(
        np.float32
    )


def stream_of(index: int, audio: np.ndarray) -> AudioStream:
    frames = [np.pad(audio[i : i + 1920], (0, max(0, i + 1920 - len(audio))))
              for i in range(0, len(audio), 1920)]
    return AudioStream(index, f"in{index}.wav", iter(frames), lambda: len(audio))


def collect(engine: KyutaiSttEngine, inputs: dict[int, np.ndarray]) -> dict[int, list]:
    result: dict[int, list] = {i: [] for i in inputs}
    ends = {}
    for event in engine.transcribe([stream_of(i, a) for i, a in inputs.items()]):
        if isinstance(event, WordEvent):
            result[event.stream].append(event.word)
        elif isinstance(event, StreamEnd):
            ends[event.stream] = event
    assert sorted(ends) == sorted(inputs)
    for i, audio in inputs.items():
        assert ends[i].error is None and ends[i].duration == pytest.approx(len(audio) / 24_000)
    return result


def test_kyutai_batch_of_n_equals_n_single_runs(tiny_lm: mm.Lm) -> None:
    inputs = {i: noise(seconds, i) for i, seconds in enumerate((1.3, 2.2, 0.5, 1.9))}
    single = KyutaiSttEngine(tiny_lm, Pieces(), EnergyCodec, STT, name="tiny", batch_size=1)
    alone = {}
    for i, audio in inputs.items():
        alone.update(collect(single, {i: audio}))
    batched = KyutaiSttEngine(tiny_lm, Pieces(), EnergyCodec, STT, name="tiny", batch_size=4)
    together = collect(batched, inputs)
    assert together == alone
    assert all(alone[i] for i in inputs)  # random weights still say something
    for i, words in alone.items():
        duration = len(inputs[i]) / 24_000
        assert all(0 <= w.start <= w.end <= duration for w in words)
        assert [w.start for w in words] == sorted(w.start for w in words)


def test_kyutai_tokens_match_moshi_mlx_lmgen(tiny_lm: mm.Lm) -> None:
    """Our batched step gives the tokens of run_inference.py's LmGen loop (temperature 0)."""
    audio = noise(1.5, 11)
    padded = np.pad(audio, (STT.prefix_samples, STT.tail_samples))
    steps = len(padded) // 1920
    frames = [padded[i * 1920 : (i + 1) * 1920] for i in range(steps)]

    tiny_lm.transformer_cache = tiny_lm.transformer.make_rot_cache()  # fresh, as loading gives
    gen = mm.LmGen(
        model=tiny_lm, max_steps=steps, text_sampler=mm_utils.Sampler(temp=0),
        audio_sampler=mm_utils.Sampler(temp=0), check=False,
    )
    codec = EnergyCodec()
    reference = []
    for frame in frames:
        codes = mx.array(codec.encode_step(frame)[None, :, None]).transpose(0, 2, 1)
        reference.append(gen.step(codes[0])[0].item())

    batch = _Batch(tiny_lm, [EnergyCodec(), EnergyCodec()])
    ours = [batch.step([frame, np.zeros(1920, np.float32)])[0] for frame in frames]
    assert ours == reference


def test_kyutai_stream_failing_midway_ends_alone(tiny_lm: mm.Lm) -> None:
    engine = KyutaiSttEngine(tiny_lm, Pieces(), EnergyCodec, STT, name="tiny", batch_size=2)
    good = noise(1.0, 3)
    alone = collect(engine, {1: good})[1]
    events = list(engine.transcribe([AudioStream(0, "broken.wav", failing_frames(4)),
                                     stream_of(1, good)]))
    ends = {e.stream: e for e in events if isinstance(e, StreamEnd)}
    assert isinstance(ends[0].error, XswarmError) and ends[1].error is None
    assert [e.word for e in events if isinstance(e, WordEvent) and e.stream == 1] == alone


def test_kyutai_rejects_a_model_that_is_not_stt() -> None:
    with pytest.raises(UsageError, match="no stt_config"):
        SttConfig.from_model_config({"dim": 8}, model="moshiko")


def test_word_type_is_shared() -> None:
    assert Word(0.0, 1.0, "a") == Word(0.0, 1.0, "a")


# --- pacing, progress, output files ---------------------------------------------------------


def test_realtime_pacing_releases_frames_at_80_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    import xswarm.transcribe as module

    clock = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(module.time, "sleep", sleep)
    released = []
    for _frame in module._paced(iter([np.zeros(1920, np.float32)] * 5)):
        released.append(clock[0])
        clock[0] += 0.01  # the consumer's own work
    assert released == pytest.approx([100.0, 100.08, 100.16, 100.24, 100.32])
    assert all(s > 0 for s in sleeps)


def test_rich_progress_shows_real_time_factor() -> None:
    from rich.console import Console

    from xswarm.transcribe import RichProgress

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with RichProgress(console, total=10.0, files=2) as progress:
        progress.start_file(0, "a.wav", 4.0)
        progress.advance(0, 2.0)
        progress._bars.refresh()
        progress.end_file(0)
    shown = out.getvalue()
    assert "a.wav" in shown and "x real time" in shown and "total (2 files)" in shown


def test_output_dir_keeps_no_partial_file_on_interrupt(
    sphinx: SphinxEngine, spoken: list, tmp_path: Path
) -> None:
    class Interrupting:
        name, batch_size = "boom", 1

        def transcribe(self, streams):
            yield WordEvent(streams[0].index, Word(0.0, 0.1, "hi"))
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        transcribe_files([str(spoken[0].path)], Interrupting(),
                         TranscribeOptions(format="srt", output_dir=out),
                         stdout=io.StringIO(), report=pytest.fail)
    assert list(out.iterdir()) == []
    transcribe_files([str(spoken[0].path)], sphinx,
                     TranscribeOptions(format="srt", output_dir=out),
                     stdout=io.StringIO(), report=pytest.fail)
    assert [p.name for p in out.iterdir()] == ["s00.srt"]


def test_sphinx_result_does_not_depend_on_earlier_files(
    sphinx: SphinxEngine, spoken: list
) -> None:
    paths = [str(s.path) for s in spoken[:6]]
    fresh = run_files([paths[-1]], SphinxEngine())[0]
    after_others = [s for s in run_files(paths, sphinx)[0] if s["file"] == paths[-1]]
    assert after_others == fresh


def test_sphinx_input_ending_inside_a_speech_region(sphinx: SphinxEngine, tmp_path: Path) -> None:
    """The VAD still in speech at the end with nothing left to give: no crash (an empty
    tail once reached process_raw(b"") -> IndexError; found by benchmarks/cluster.py)."""
    for i, text in enumerate(("my brother lives in london", "can you help me with this")):
        path = tmp_path / f"e{i}.wav"
        flite_speech(text, path, lead_seconds=0.3, tail_seconds=0.3)
        segments, errors, failures = run_files([str(path)], sphinx)
        assert failures == 0 and errors == []
        assert " ".join(s["text"] for s in segments).split()[-1] in text.split()


def test_batches_group_inputs_of_similar_length_and_output_keeps_input_order(
    tmp_path: Path,
) -> None:
    class Recording:
        name, batch_size = "recording", 2

        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        def transcribe(self, streams):
            self.batches.append([s.name for s in streams])
            for stream in streams:
                yielded = sum(len(frame) for frame in stream.frames)
                seconds = stream.samples(yielded) / 24_000
                yield WordEvent(stream.index, Word(0.0, seconds, Path(stream.name).stem))
                yield StreamEnd(stream.index, seconds)

    paths = []
    for name, seconds in (("a", 0.5), ("b", 3.0), ("c", 0.6), ("d", 2.0)):
        path = tmp_path / f"{name}.wav"
        sf.write(path, np.zeros(int(16_000 * seconds), np.float32), 16_000)
        paths.append(str(path))
    engine = Recording()
    segments, errors, failures = run_files(paths, engine)
    assert (errors, failures) == ([], 0)
    assert [[Path(n).stem for n in batch] for batch in engine.batches] == [["b", "d"], ["c", "a"]]
    assert [s["text"] for s in segments] == ["a", "b", "c", "d"]
