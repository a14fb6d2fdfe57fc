"""``xswarm talk``: parse the options into a TalkConfig and run the session (xswarm.talk).

Only typer and the standard library at import time: the heavy modules load
inside the command body, so ``xswarm --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from xswarm.cli._app import app, command_errors, env

TALK_HELP = """Talk with the assistant, full duplex: you speak, it answers at the same time.

The transcript goes to stdout (JSON lines when piped or with --json); the
live status line and messages go to stderr. Ctrl-C ends the session (exit 130).

Examples:

  xswarm talk                                   # microphone -> speaker

  xswarm talk --input q.wav --output a.wav      # headless, from and to files

  xswarm talk -i q.wav -o a.wav --fast | jq -r 'select(.type == "word") | .text'

  xswarm talk --record session.wav --duration 60

  xswarm talk --mode cascade --llm-url http://127.0.0.1:11434/v1 --llm-model llama3.2

Cascade mode (--mode cascade, or a persona with mode = "cascade") puts a text
LLM between speech-to-text and text-to-speech: the persona's prompt and
memory, any OpenAI-compatible server (ollama, llama.cpp, LM Studio, vLLM; the
key from XSWARM_LLM_API_KEY or OPENAI_API_KEY), and both speakers in the
transcript. Speak over the assistant to interrupt it.
"""


@app.command(help=TALK_HELP, no_args_is_help=False)
def talk(
    persona: str = typer.Option(
        None,
        "--persona",
        "-p",
        rich_help_panel="Who",
        help="Who the assistant is (xswarm personas list). "
        "Default: XSWARM_PERSONA, the config file, or jarvis.",
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        rich_help_panel="Who",
        help="A Moshi model name (xswarm models list) or a directory. Default: the persona's.",
    ),
    mode: str = typer.Option(
        None,
        "--mode",
        metavar="duplex|cascade",
        rich_help_panel="Who",
        help="duplex: Moshi listens and speaks at once; cascade: STT -> text LLM -> TTS. "
        "Default: the persona's mode, else duplex.",
    ),
    stt_model: str = typer.Option(
        None,
        "--stt-model",
        rich_help_panel="Cascade",
        help="Speech-to-text model: a name (xswarm models list), sphinx-en, tiny-random or a "
        "directory. Default: the persona's, else stt-1b-en_fr-mlx.",
    ),
    tts_model: str = typer.Option(
        None,
        "--tts-model",
        rich_help_panel="Cascade",
        help="Text-to-speech model: a name, tiny-random or a directory. "
        "Default: the persona's, else tts-1.6b-en_fr.",
    ),
    llm_url: str = typer.Option(
        None,
        "--llm-url",
        rich_help_panel="Cascade",
        help="Base URL of an OpenAI-compatible chat server, e.g. http://127.0.0.1:11434/v1 "
        "(ollama). Default: the persona's llm.url.",
    ),
    llm_model: str = typer.Option(
        None,
        "--llm-model",
        rich_help_panel="Cascade",
        help="The model name the server knows (mlx:PATH runs an MLX model in-process). "
        "Default: the persona's llm.model.",
    ),
    llm_timeout: float = typer.Option(
        None,
        "--llm-timeout",
        rich_help_panel="Cascade",
        help="Seconds without text from the LLM before giving up on it (default 15; "
        "keep-alives do not count).",
    ),
    input_device: str = typer.Option(
        None,
        "--input-device",
        rich_help_panel="Devices",
        help="Microphone: index or part of its name (xswarm devices).",
    ),
    output_device: str = typer.Option(
        None,
        "--output-device",
        rich_help_panel="Devices",
        help="Speaker: index or part of its name.",
    ),
    input: str = typer.Option(
        None,
        "--input",
        "-i",
        rich_help_panel="Files",
        help="Read the user's side from an audio file ('-': stdin) instead of the mic.",
    ),
    output: str = typer.Option(
        None,
        "--output",
        "-o",
        rich_help_panel="Files",
        help="Write the assistant's audio to a file ('-': WAV on stdout) instead of the speaker.",
    ),
    record: str = typer.Option(
        None,
        "--record",
        rich_help_panel="Files",
        help="Also write the session as a stereo file: left you, right the assistant.",
    ),
    duration: float = typer.Option(
        None, "--duration", "-d", rich_help_panel="Files", help="Stop after this many seconds."
    ),
    fast: bool = typer.Option(
        False,
        "--fast",
        rich_help_panel="Files",
        help="With --input: run as fast as the model goes, not in real time "
        "(without --output, only the transcript is kept).",
    ),
    json_output: bool = typer.Option(
        False, "--json", rich_help_panel="Output", help="JSON lines on stdout even on a terminal."
    ),
    log: str = typer.Option(
        None,
        "--log",
        rich_help_panel="Output",
        help="Write a JSON-lines event log (load, every frame, warnings) to FILE.",
    ),
    trace: str = typer.Option(
        None,
        "--trace",
        rich_help_panel="Output",
        help="Write a Chrome/Perfetto trace of per-frame spans to FILE.",
    ),
    aec: bool = typer.Option(
        None,
        "--aec/--no-aec",
        rich_help_panel="Devices",
        help="Cancel the speaker's echo from the microphone "
        "(default: on when both are sound devices).",
    ),
    history: bool = typer.Option(
        True,
        "--history/--no-history",
        rich_help_panel="Output",
        help="Save the conversation in the history (xswarm history) and the persona's memory.",
    ),
    seed: int = typer.Option(
        None, "--seed", rich_help_panel="Who", help="Sampling seed, to replay a session exactly."
    ),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        rich_help_panel="Output",
        help="No status line, no messages on stderr (errors still).",
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    env.debug = env.debug or debug
    with command_errors():
        import trio

        from xswarm.talk import TalkConfig, TalkIO, run_talk

        config = TalkConfig(
            model=model,
            persona=persona,
            input_device=input_device,
            output_device=output_device,
            input_path=input,
            output_path=output,
            record_path=record,
            duration=duration,
            fast=fast,
            seed=seed,
            json=json_output,
            quiet=quiet,
            log_path=Path(log) if log else None,
            trace_path=Path(trace) if trace else None,
            history=history,
            aec=aec,
            mode=mode,
            stt_model=stt_model,
            tts_model=tts_model,
            llm_url=llm_url,
            llm_model=llm_model,
            llm_timeout=llm_timeout,
        )
        io = TalkIO(
            stdout=env.stdout,
            stderr=env.stderr,
            stdout_tty=env.stdout_isatty,
            stderr_tty=env.stderr_isatty,
            color=env.color,
            keyboard=sys.stdin,
        )
        trio.run(run_talk, config, io)
