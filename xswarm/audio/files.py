"""Audio files as frame sources and sinks: any rate, any channel count, ``-`` for stdio.

A source decodes a file with soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus,
MP3, AIFF, ...), downmixes to mono, resamples to :data:`SAMPLE_RATE` with a
streaming soxr resampler and yields float32 frames of exactly
:data:`FRAME_SAMPLES`. It reads :data:`READ_BLOCK_SECONDS` of input at a time,
so memory stays flat however long the file is. The last frame is zero-padded;
:attr:`AudioSource.samples` says how many samples were real.

``-`` reads stdin. It is read fully into memory before decoding: libsndfile's
pipe support is partial (measured with libsndfile 1.2.2: WAV and MP3 open on a
pipe, FLAC "lost sync" and OGG "unspecified internal error"), and an in-memory
copy makes every format behave the same.

A sink writes WAV, FLAC, OGG or MP3 by the file's extension. ``-`` writes WAV
to stdout: to a regular file (``> out.wav``) through libsndfile, which fixes up
the header on close; to a pipe as a streaming WAV whose header declares the
largest size (0xFFFFFFFF), as sox and ffmpeg do, since a pipe cannot be
rewound. Sinks are closed in ``finally`` by their actor, so a cancelled session
still leaves a complete, valid file.

Bad input raises :class:`~xswarm.errors.UsageError` (exit 2) with a one-line
message naming the file and the fix; nothing here prints.

The sync API (:func:`open_source`, :func:`open_sink`) is for code outside Trio
(``xswarm transcribe``); the actors (:func:`file_source_actor`,
:func:`file_sink_actor`) wrap it for the talk pipeline.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import stat
import struct
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol

from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from xswarm.audio.frame import AudioFrame
from xswarm.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import soundfile  # type: ignore[import-untyped]

READ_BLOCK_SECONDS: Final = 0.5  # s of input decoded per read: flat memory, few calls
FAST_READ_FRAMES: Final = (
    25  # frames per worker-thread read when not paced (2 s): amortises the hop
)
RESAMPLE_QUALITY: Final = "HQ"  # soxr's default: transparent for speech, cheap enough for 96 kHz
STDIN_NAME: Final = "<stdin>"
STDOUT_NAME: Final = "<stdout>"
STDIN_EXAMPLE: Final = "pipe an audio file in, e.g. cat a.wav | xswarm transcribe -"

# Sink formats by extension: (libsndfile format, default subtype).
SINK_FORMATS: Final[dict[str, tuple[str, str]]] = {
    ".wav": ("WAV", "PCM_16"),  # 16-bit PCM: what every player reads
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
STREAMING_WAV_SIZE: Final = 0xFFFFFFFF  # "unknown length" in a piped WAV header (sox, ffmpeg)


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What an opened audio file holds, before any resampling."""

    path: str  # as given; "-" for stdin
    name: str  # for messages: the path, or "<stdin>"
    sample_rate: int  # Hz, of the file
    channels: int
    frames: int  # samples per channel in the file
    format: str  # libsndfile's major format, e.g. "WAV", "FLAC"
    subtype: str  # e.g. "PCM_16", "FLOAT", "VORBIS"

    @property
    def duration(self) -> float:
        """Seconds of audio in the file."""
        return self.frames / self.sample_rate

    @property
    def output_samples(self) -> int:
        """Samples at :data:`SAMPLE_RATE` the header's length becomes (padding excluded).

        An estimate for formats whose header length is one; after reading,
        :attr:`AudioSource.samples` is the truth.
        """
        return round(self.frames * SAMPLE_RATE / self.sample_rate)

    @property
    def output_frames(self) -> int:
        """How many frames :meth:`AudioSource.frames` yields."""
        return math.ceil(self.output_samples / FRAME_SAMPLES)


def _convert_hint(name: str) -> str:
    source = "-" if name == STDIN_NAME else name
    return f"convert it to WAV or FLAC, e.g. ffmpeg -i {source} out.wav"


def _bad_file(name: str, problem: str, fix: str = "") -> UsageError:
    return UsageError(f"{name}: {problem}" + (f"; {fix}" if fix else ""))


class AudioSource:
    """An opened audio file yielding 24 kHz mono float32 frames. Use :func:`open_source`.

    Not thread-safe: one reader at a time. :meth:`close` is idempotent; the
    context manager closes. Iterating :meth:`frames` a second time raises
    ``RuntimeError`` (a source is a stream, not a list).
    """

    def __init__(self, sound_file: soundfile.SoundFile, info: AudioInfo) -> None:
        self._file = sound_file
        self.info = info
        self.samples = 0  # real (unpadded) output samples yielded so far
        self.frames_read = 0  # frames yielded so far
        self.input_frames = 0  # samples per channel decoded from the file so far
        self._started = False
        self._closed = False
        self._iterator: Iterator[np.ndarray] | None = None
        self._pending_error: UsageError | None = None

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def duration(self) -> float:
        """Seconds of audio yielded so far (real samples, padding excluded)."""
        return self.samples / SAMPLE_RATE

    def frames(self) -> Iterator[np.ndarray]:
        """Yield float32 arrays of shape ``(FRAME_SAMPLES,)``, each a fresh array.

        Raises :class:`UsageError` if the file holds NaN or infinite samples
        (naming the time of the first one) or if decoding fails part-way.
        """
        import numpy as np

        if self._started:
            raise RuntimeError(f"{self.info.name}: frames() can be iterated only once")
        self._started = True
        pending: np.ndarray = np.zeros(0, dtype=np.float32)
        for chunk in self._resampled_blocks():
            pending = np.concatenate([pending, chunk]) if len(pending) else chunk
            while len(pending) >= FRAME_SAMPLES:
                frame = np.array(pending[:FRAME_SAMPLES], dtype=np.float32)
                pending = pending[FRAME_SAMPLES:]
                self.samples += FRAME_SAMPLES
                self.frames_read += 1
                yield frame
        # The true length follows the samples decoded (a header's count can be an
        # estimate, e.g. VBR MP3); soxr's total is within one sample of the exact ratio.
        target = round(self.input_frames * SAMPLE_RATE / self.info.sample_rate)
        missing = target - self.samples - len(pending)
        if missing > 0:
            pending = np.concatenate([pending, np.zeros(missing, dtype=np.float32)])
        elif missing < 0:
            pending = pending[: max(0, len(pending) + missing)]
        while len(pending):
            real = min(len(pending), FRAME_SAMPLES)
            frame = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            frame[:real] = pending[:real]
            pending = pending[real:]
            self.samples += real
            self.frames_read += 1
            yield frame

    def read_frames(self, count: int) -> list[np.ndarray]:
        """Up to ``count`` next frames; an empty list at the end. For worker-thread reads.

        A decoding error raised after some frames were read is held back and
        raised by the next call, so the good frames before it are delivered.
        """
        if self._iterator is None:
            self._iterator = self.frames()
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        out: list[np.ndarray] = []
        try:
            for frame in self._iterator:
                out.append(frame)
                if len(out) >= count:
                    break
        except UsageError as error:
            if not out:
                raise
            self._pending_error = error
        return out

    def _resampled_blocks(self) -> Iterator[np.ndarray]:
        import numpy as np
        import soundfile  # type: ignore[import-untyped]
        import soxr  # type: ignore[import-untyped]

        info = self.info
        resampler = (
            None
            if info.sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(info.sample_rate, SAMPLE_RATE, 1, "float32", RESAMPLE_QUALITY)
        )
        block_frames = max(1, int(info.sample_rate * READ_BLOCK_SECONDS))
        position = 0  # input frames read so far, for error messages
        while True:
            try:
                block = self._file.read(block_frames, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as error:
                raise _bad_file(
                    info.name,
                    f"decoding failed at {position / info.sample_rate:.2f} s ({error})",
                    "the file is damaged; " + _convert_hint(info.name),
                ) from None
            finite = np.isfinite(block)
            if not finite.all():
                bad_row, bad_channel = np.argwhere(~finite)[0]
                kind = "NaN" if np.isnan(block[bad_row, bad_channel]) else "infinite"
                at = (position + int(bad_row)) / info.sample_rate
                raise _bad_file(
                    info.name,
                    f"{kind} sample at {at:.3f} s (channel {int(bad_channel) + 1})",
                    "the file is corrupt; re-export it from its source",
                )
            position += len(block)
            self.input_frames = position
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            last = len(block) < block_frames
            if resampler is None:
                out = np.ascontiguousarray(mono, dtype=np.float32)
            else:
                out = resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
            if len(out):
                yield out
            if last:
                return


def _check_path(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _bad_file(path, "no such file", "check the path") from None
    except PermissionError:
        raise _bad_file(path, "permission denied", "check the file's permissions") from None
    except OSError as error:
        raise _bad_file(path, f"cannot open ({error.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _bad_file(path, "is a directory, not an audio file", "name a file inside it")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise _bad_file(path, "is empty (0 bytes)", "record or export the audio again")


def open_source(path: str | os.PathLike[str], *, stdin: BinaryIO | None = None) -> AudioSource:
    """Open an audio file (``"-"``: stdin) as a source of 24 kHz mono frames.

    ``stdin`` replaces ``sys.stdin.buffer`` for ``"-"`` (tests). The caller
    closes the source (or uses it as a context manager).

    Raises :class:`UsageError` naming the file for: a missing file, a
    directory, an empty file, anything libsndfile cannot decode (not audio,
    truncated header, unsupported codec), and a file with zero samples.
    """
    import soundfile  # type: ignore[import-untyped]

    path = os.fspath(path)
    if path == "-":
        name = STDIN_NAME
        stream = stdin if stdin is not None else sys.stdin.buffer
        if _isatty(stream):
            raise _bad_file(name, "is a terminal, not audio", STDIN_EXAMPLE)
        data = stream.read()
        if not data:
            raise _bad_file(name, "no data on stdin", STDIN_EXAMPLE)
        target: Any = io.BytesIO(data)
    else:
        name = path
        _check_path(path)
        target = path
    try:
        sound_file = soundfile.SoundFile(target)
    except soundfile.LibsndfileError as error:
        reason = error.error_string.strip().rstrip(".") or "unknown error"
        raise _bad_file(
            name, f"not an audio file libsndfile can read ({reason})", _convert_hint(name)
        ) from None
    except (OSError, RuntimeError) as error:
        raise _bad_file(name, f"cannot open ({error})") from None
    info = AudioInfo(
        path=path,
        name=name,
        sample_rate=int(sound_file.samplerate),
        channels=int(sound_file.channels),
        frames=int(sound_file.frames),
        format=str(sound_file.format),
        subtype=str(sound_file.subtype),
    )
    if info.frames <= 0 or info.sample_rate <= 0:
        sound_file.close()
        raise _bad_file(
            name, "holds no audio samples (0 frames)", "record or export the audio again"
        )
    return AudioSource(sound_file, info)


# --- sinks -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SinkInfo:
    """Where and how a sink writes."""

    path: str  # as given; "-" for stdout
    name: str  # for messages
    sample_rate: int  # Hz
    channels: int
    format: str  # libsndfile major format
    subtype: str


class _Writer(Protocol):
    def write(self, data: np.ndarray) -> None: ...
    def close(self) -> None: ...


class _StreamingWav:
    """A WAV written to a pipe: header with 'unknown' sizes, then 16-bit PCM."""

    def __init__(self, stream: BinaryIO, sample_rate: int, channels: int) -> None:
        self._stream = stream
        bits = 16
        fmt = struct.pack(
            "<HHIIHH", 1, channels, sample_rate, sample_rate * channels * bits // 8,
            channels * bits // 8, bits,
        )  # fmt: skip
        size = struct.pack("<I", STREAMING_WAV_SIZE)
        stream.write(
            b"RIFF" + size + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + size
        )

    def write(self, data: np.ndarray) -> None:
        import numpy as np

        pcm = np.clip(np.rint(data * 32767.0), -32768, 32767).astype("<i2")
        self._stream.write(pcm.tobytes())

    def close(self) -> None:
        self._stream.flush()


class AudioSink:
    """An audio file being written. Use :func:`open_sink`.

    :meth:`write` takes float32 samples in [-1, 1], shape ``(n,)`` for mono or
    ``(n, channels)``. :meth:`close` finalises the header (idempotent); until
    then a WAV on disk may declare a wrong length.
    """

    def __init__(self, writer: _Writer, info: SinkInfo) -> None:
        self._writer = writer
        self.info = info
        self.frames_written = 0  # samples per channel written
        self._closed = False

    def __enter__(self) -> AudioSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, pcm: np.ndarray) -> None:
        import numpy as np

        data = np.asarray(pcm, dtype=np.float32)
        if data.ndim == 1 and self.info.channels > 1:
            data = np.repeat(data[:, None], self.info.channels, axis=1)
        self._writer.write(data)
        self.frames_written += len(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()


def open_sink(
    path: str | os.PathLike[str],
    *,
    channels: int = 1,
    sample_rate: int = SAMPLE_RATE,
    subtype: str | None = None,
    stdout: BinaryIO | None = None,
) -> AudioSink:
    """Create an audio file to write (``"-"``: WAV on stdout; ``stdout`` replaces it in tests).

    The format follows the extension (.wav, .flac, .ogg, .mp3); ``subtype``
    overrides the default (16-bit PCM for WAV/FLAC). An existing file is
    replaced. The caller closes the sink. Raises :class:`UsageError` for an
    unknown extension, a missing directory, a directory path or no permission.
    A piped WAV on stdout is written to a terminal too: refusing that is the
    command's call (it knows whether stdout carries audio).
    """
    import soundfile  # type: ignore[import-untyped]

    path = os.fspath(path)
    if path == "-":
        stream = stdout if stdout is not None else sys.stdout.buffer
        info = SinkInfo("-", STDOUT_NAME, sample_rate, channels, "WAV", subtype or "PCM_16")
        if _is_regular_file(stream):
            stream.flush()
            writer: _Writer = soundfile.SoundFile(
                stream, "w", sample_rate, channels, info.subtype, format="WAV"
            )
        else:
            if info.subtype != "PCM_16":
                raise UsageError(f"{STDOUT_NAME}: a piped WAV is written as PCM_16 only")
            writer = _StreamingWav(stream, sample_rate, channels)
        return AudioSink(writer, info)

    extension = os.path.splitext(path)[1].lower()
    if extension not in SINK_FORMATS:
        known = ", ".join(SINK_FORMATS)
        raise _bad_file(
            path, f"unknown audio format {extension or '(no extension)'!r}", f"use {known}"
        )
    major, default_subtype = SINK_FORMATS[extension]
    info = SinkInfo(path, path, sample_rate, channels, major, subtype or default_subtype)
    if os.path.isdir(path):
        raise _bad_file(path, "is a directory", "name a file to write")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _bad_file(path, f"directory {parent} does not exist", "create it first")
    try:
        writer = soundfile.SoundFile(path, "w", sample_rate, channels, info.subtype, format=major)
    except soundfile.LibsndfileError as error:
        raise _bad_file(path, f"cannot write ({error.error_string.strip()})") from None
    except (OSError, ValueError) as error:
        raise _bad_file(path, f"cannot write ({error})") from None
    return AudioSink(writer, info)


def _isatty(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _is_regular_file(stream: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode) and stream.seekable()
    except (OSError, AttributeError, ValueError):  # BytesIO has no fileno: treat it as a pipe
        return False


# --- actors ------------------------------------------------------------------


class FrameSender(Protocol):
    """The send end the file source needs (a trio channel or the runtime's Sender)."""

    def send_nowait(self, item: AudioFrame) -> None: ...
    async def send(self, item: AudioFrame) -> None: ...


async def file_source_actor(
    source: AudioSource,
    send: FrameSender,
    *,
    realtime: bool,
    decode_in_thread: bool = True,
) -> None:
    """Send the source's frames as :class:`AudioFrame`, then close ``send`` (end of input).

    ``realtime=True`` releases frame *i* at ``start + i * FRAME_SECONDS`` on
    Trio's clock (``trio.sleep_until`` on a fixed schedule, so no drift
    accumulates) and uses ``send_nowait``: like a microphone, it never waits
    for a slow consumer (the channel's overflow policy decides). With
    ``realtime=False`` frames go as fast as the consumer takes them (``await
    send`` gives backpressure).

    Decoding runs in a worker thread (``trio.to_thread``) by default: a block
    costs 0.04-6 ms (measured: MP3 to 96 kHz 6-channel FLAC, 0.5 s blocks),
    harmless for the event loop, but a network file system can stall and the
    loop must not. ``decode_in_thread=False`` decodes on the loop's thread
    (tests with a fake clock, which would jump while a thread works). stdin
    was read into memory by :func:`open_source`, so no read blocks on a pipe.

    The actor owns ``source`` and closes it on exit, also on cancellation; it
    closes ``send`` too (end of input). If every receiver closed, it stops
    quietly. A :class:`UsageError` from decoding
    (NaN samples, damaged data) propagates after the frames before it were sent.
    """
    import trio

    try:
        start = trio.current_time()
        index = 0
        chunk = 1 if realtime else FAST_READ_FRAMES
        while True:
            if decode_in_thread:
                pcms = await trio.to_thread.run_sync(source.read_frames, chunk)
            else:
                pcms = source.read_frames(chunk)
                await trio.lowlevel.checkpoint()
            if not pcms:
                break
            for pcm in pcms:
                if realtime:
                    await trio.sleep_until(start + index * FRAME_SECONDS)
                    send.send_nowait(AudioFrame(pcm, index, time.monotonic()))
                else:
                    await send.send(AudioFrame(pcm, index, time.monotonic()))
                index += 1
    except trio.BrokenResourceError:
        pass  # every consumer left: nobody wants the rest of the file
    finally:
        source.close()
        await _close_channel(send)


async def file_sink_actor(receive: Any, sink: AudioSink) -> None:
    """Write every frame received (``AudioFrame`` or bare array) to ``sink`` until the end.

    The actor owns ``sink`` and ``receive`` and closes both in ``finally``:
    after a cancel the file holds every frame written so far and a valid
    header. Writes to a file are a few kilobytes and run on the event loop's
    thread; writes to stdout go through a worker thread, because a slow reader
    at the other end of a pipe would otherwise stall the loop. A closed stdout
    pipe raises ``BrokenPipeError`` (the CLI ends quietly on it).
    """
    import trio

    to_pipe = sink.info.path == "-"
    try:
        async for item in receive:
            pcm = item.pcm if isinstance(item, AudioFrame) else item
            if to_pipe:
                await trio.to_thread.run_sync(sink.write, pcm)
            else:
                sink.write(pcm)
    finally:
        sink.close()
        close = getattr(receive, "close", None)
        if close is not None:
            close()


async def _close_channel(channel: Any) -> None:
    import trio

    aclose = getattr(channel, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()
    elif hasattr(channel, "close"):
        channel.close()
