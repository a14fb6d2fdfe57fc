"""Token -> word assembly, delay correction, segmentation and output formats."""

from __future__ import annotations

import json
import math

import pytest
import sentencepiece as spm

from tests.speech import parse_srt, parse_vtt
from xswarm.transcript import (
    MAX_CUE_SECONDS,
    MAX_LINE_CHARS,
    PieceTable,
    Segment,
    Segmenter,
    Word,
    WordAssembler,
    render,
    segment_words,
    subtitle_time,
    wrap_lines,
)

PIECES = ["<epad>", "<s>", "</s>", "<pad>", "▁hello", "▁wor", "ld", "▁again", ".", "▁x"]


class Pieces:
    """A hand-made piece table: ids are indexes into PIECES."""

    def id_to_piece(self, id: int) -> str:
        return PIECES[id]

    def decode(self, ids: list[int]) -> str:
        text = "".join(PIECES[i] for i in ids if not PIECES[i].startswith("<"))
        return text.replace("▁", " ").strip()


PIECE_TABLE = Pieces()


def assemble(
    tokens: list[int], *, offset: float, horizon: float = math.inf, pieces: PieceTable = PIECE_TABLE
) -> list[Word]:
    assembler = WordAssembler(pieces, offset_seconds=offset)
    words = [w for t in tokens if (w := assembler.push(t, horizon=horizon))]
    last = assembler.finish(horizon=horizon)
    return [*words, last] if last else words


def stream(*runs: tuple[int, int]) -> list[int]:
    """(token, count) runs -> a flat token list."""
    return [token for token, count in runs for _ in range(count)]


def test_words_from_pieces_with_delay_correction() -> None:
    # step: 0-6 PAD, 7 EPAD, 8 ▁hello, 9-10 PAD, 11 EPAD, 12 ▁wor, 13 ld,
    # 14-40 PAD (a pause), 41 EPAD, 42 ▁again, 43 ".", 44-45 PAD
    tokens = stream((3, 7), (0, 1), (4, 1), (3, 2), (0, 1), (5, 1), (6, 1), (3, 27), (0, 1),
                    (7, 1), (8, 1), (3, 2))
    assert len(tokens) == 46
    words = assemble(tokens, offset=0.5)
    assert [w.text for w in words] == ["hello", "world", "again."]
    # start = step * 0.08 - 0.5; end = next word's start, bounded by 12 steps (0.96 s)
    expected = [(8, 12), (12, 24), (42, 46)]
    for word, (first, end) in zip(words, expected, strict=True):
        assert word.start == pytest.approx(first * 0.08 - 0.5)
        assert word.end == pytest.approx(end * 0.08 - 0.5)


def test_silence_prefix_and_delay_are_both_subtracted_and_times_clamped() -> None:
    # offset = 1.0 s prefix + 0.5 s delay: step 0 is at -1.5 s, step 25 at +0.5 s
    tokens = stream((4, 1), (3, 24), (7, 1), (3, 30))
    words = assemble(tokens, offset=1.5)
    assert [w.text for w in words] == ["hello", "again"]
    assert (words[0].start, words[0].end) == (0.0, 0.0)  # clamped, never negative
    assert words[1].start == pytest.approx(25 * 0.08 - 1.5)
    assert words[1].end == pytest.approx(37 * 0.08 - 1.5)  # 12 steps (0.96 s) at most


def test_times_never_pass_the_audio_heard() -> None:
    tokens = stream((3, 5), (4, 1), (3, 40))
    words = assemble(tokens, offset=0.0, horizon=0.5)
    assert words == [Word(start=0.4, end=0.5, text="hello")]


def test_padding_only_gives_no_words_and_control_pieces_are_dropped() -> None:
    assert assemble(stream((3, 20), (0, 3)), offset=0.5) == []
    assert assemble(stream((1, 1), (2, 1), (3, 5)), offset=0.0) == []


def test_word_text_is_one_printable_line() -> None:
    class Bytes(Pieces):
        def decode(self, ids: list[int]) -> str:
            return "a\n\x00b\tc"

    words = assemble([4, 3], offset=0.0, pieces=Bytes())
    assert [w.text for w in words] == ["a b c"]


def test_continuation_piece_first_starts_a_word() -> None:
    words = assemble(stream((6, 1), (3, 1), (9, 1)), offset=0.0)
    assert [w.text for w in words] == ["ld", "x"]
    assert words[0].end == pytest.approx(0.16) and words[1].start == pytest.approx(0.16)


def test_real_sentencepiece_pieces(tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world again\nthe weather is nice today\nworld of words\n" * 50)
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=30,
        model_type="unigram", minloglevel=2, hard_vocab_limit=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,  # Kyutai's layout: 0 and 3 never carry text
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    ids = sp.encode("hello world again")
    assert len(ids) > 3  # pieces, not whole words
    tokens = []
    for i in ids:  # every piece starting a word is preceded by padding, as Kyutai does
        if sp.id_to_piece(i).startswith("▁"):
            tokens += [3, 3, 0]
        tokens.append(i)
    assert 0 not in ids and 3 not in ids
    words = assemble(tokens + [3] * 5, offset=0.0, pieces=sp)
    assert [w.text for w in words] == ["hello", "world", "again"]


def test_segments_split_at_pause_sentence_end_and_limits() -> None:
    words = [
        Word(0.0, 0.3, "one"), Word(0.3, 0.6, "two."),  # sentence end
        Word(0.8, 1.0, "three"), Word(2.0, 2.2, "four"),  # 1.0 s pause before "four"
    ]
    assert [s.text for s in segment_words(words)] == ["one two.", "three", "four"]
    long = [Word(i * 0.5, i * 0.5 + 0.4, "word") for i in range(40)]
    segments = segment_words(long)
    assert all(s.end - s.start <= MAX_CUE_SECONDS for s in segments)
    assert [w for s in segments for w in s.words] == long
    wide = [Word(i * 0.1, i * 0.1 + 0.1, "abcdefghijklmnop") for i in range(20)]
    for segment in segment_words(wide):
        lines = wrap_lines(segment.text)
        assert len(lines) <= 2 and all(len(line) <= MAX_LINE_CHARS for line in lines)


def test_segmenter_returns_each_segment_once() -> None:
    segmenter = Segmenter()
    assert segmenter.push(Word(0, 1, "hi.")) == [Segment((Word(0, 1, "hi."),))]
    assert segmenter.finish() == []


def test_wrap_cuts_overlong_words() -> None:
    assert wrap_lines("a " + "x" * 90) == ["a", "x" * 42, "x" * 42, "x" * 6]


def test_subtitle_time() -> None:
    assert subtitle_time(3725.5, separator=",") == "01:02:05,500"
    assert subtitle_time(0.0004, separator=".") == "00:00:00.000"


SEGMENTS = segment_words([
    Word(0.48, 0.8, "Hello"), Word(0.8, 1.2, "world."), Word(3.0, 3.5, "Again"),
])


def test_every_format_round_trips() -> None:
    lines = render("jsonl", SEGMENTS, file="a.wav", duration=4.0).splitlines()
    objs = [json.loads(line) for line in lines]
    assert objs[0] == {
        "type": "segment", "file": "a.wav", "start": 0.48, "end": 1.2, "text": "Hello world.",
        "words": [{"start": 0.48, "end": 0.8, "text": "Hello"},
                  {"start": 0.8, "end": 1.2, "text": "world."}],
    }
    assert [o["text"] for o in objs] == ["Hello world.", "Again"]
    words = [json.loads(line) for line in
             render("jsonl", SEGMENTS, file="a.wav", duration=4.0, words=True).splitlines()]
    assert [(w["type"], w["text"]) for w in words] == [
        ("word", "Hello"), ("word", "world."), ("word", "Again")]
    doc = json.loads(render("json", SEGMENTS, file="a.wav", duration=4.0))
    assert doc["type"] == "transcript" and doc["duration"] == 4.0
    assert doc["text"] == "Hello world. Again" and len(doc["segments"]) == 2
    assert render("txt", SEGMENTS, file="a.wav", duration=4.0) == "Hello world.\nAgain\n"
    srt = parse_srt(render("srt", SEGMENTS, file="a.wav", duration=4.0))
    assert [(c.start, c.end, c.text) for c in srt] == [(0.48, 1.2, "Hello world."),
                                                       (3.0, 3.5, "Again")]
    vtt = parse_vtt(render("vtt", SEGMENTS, file="a.wav", duration=4.0, words=True))
    assert [c.text for c in vtt] == ["Hello", "world.", "Again"]
    pretty = render("pretty", SEGMENTS, file="a.wav", duration=4.0)
    assert pretty.splitlines()[0] == "[0:00.48 - 0:01.20] Hello world."


def test_empty_transcripts_are_valid() -> None:
    assert render("jsonl", [], file="a", duration=1.0) == ""
    assert parse_srt(render("srt", [], file="a", duration=1.0)) == []
    assert parse_vtt(render("vtt", [], file="a", duration=1.0)) == []
    assert json.loads(render("json", [], file="a", duration=1.0))["segments"] == []
