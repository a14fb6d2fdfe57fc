"""``xswarm transcribe --ray`` without a cluster: bad inputs and options, input expansion,
the manifest's line discipline, and Ray staying unimported unless asked for."""

from __future__ import annotations

import fcntl
import io
import os
from pathlib import Path

import pytest

from tests.cli_helpers import run_xswarm
from tests.speech import flite_speech
from xswarm.cluster.inputs import InputFile, expand_inputs
from xswarm.cluster.manifest import MANIFEST_NAME, Manifest, read_records
from xswarm.errors import UsageError


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    flite_speech("thank you very much", path, lead_seconds=0.2, tail_seconds=0.2)
    return path


def check_error(args: list[str], code: int, message: str, **kwargs) -> None:
    result = run_xswarm("transcribe", *args, **kwargs)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("xswarm: error: ") and message in lines[0], lines[0]


def test_bad_options_and_inputs_are_one_line_usage_errors(speech: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    check_error(["--ray", str(speech)], 2, "--ray needs --output-dir DIR")
    check_error(["--ray", "-o", out, "-"], 2, "- (stdin) cannot be sent to Ray workers")
    check_error(["--workers", "2", str(speech)], 2, "--workers is for --ray runs")
    check_error(["--ray", "--realtime", "-o", out, str(speech)], 2, "--realtime")
    check_error(["--ray", "-o", out, "--format", "doc", str(speech)], 2, "--format doc")
    check_error(["--ray", "-o", out, f"@{tmp_path}/missing.txt"], 2,
                f"@{tmp_path}/missing.txt: no such list file")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here\n")
    check_error(["--ray", "-o", out, str(empty)], 2, f"no audio files in {empty}")
    (tmp_path / "empty.txt").write_text("# nothing listed\n\n")
    check_error(["--ray", "-o", out, f"@{tmp_path}/empty.txt"], 2, "no audio files in")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "x.wav").write_bytes(speech.read_bytes())
    (two / "x.wav").write_bytes(speech.read_bytes())
    check_error(["--ray", "-o", out, str(one), str(two)], 2,
                f"{one}/x.wav and {two}/x.wav would both be written to x.jsonl")
    check_error(["--ray-address", "head-node", "-o", out, str(speech)], 2,
                "--ray-address head-node: not a Ray address")
    check_error(["--ray-address", "127.0.0.1:1", "-o", out, str(speech)], 1,
                "--ray-address 127.0.0.1:1: cannot reach a Ray cluster there")
    check_error(["--ray-address", "ray://127.0.0.1:1", "-o", out, str(speech)], 1,
                "cannot reach a Ray cluster there")
    assert not Path(out).exists()  # nothing written for a job that never started
    missing = run_xswarm("transcribe", "--ray", "-o", out)
    assert missing.returncode == 2 and "Missing argument 'FILE'" in missing.stderr


def test_without_ray_installed_the_error_names_the_extra(speech: Path, tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    (hide / "ray").mkdir(parents=True)
    (hide / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(os.environ, PYTHONPATH=str(hide))
    check_error(["--ray", "-o", str(tmp_path / "out"), str(speech)], 1,
                "--ray needs Ray, which is not installed: pip install 'xswarm[cluster]'", env=env)


def test_a_second_job_on_the_same_output_dir_is_refused(speech: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with open(out / MANIFEST_NAME, "ab") as held:  # another job's lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        check_error(["--ray", "--model", "sphinx-en", "-o", str(out), str(speech)], 2,
                    f"{out}: another xswarm transcribe --ray job is writing there")
    assert list(out.iterdir()) == [out / MANIFEST_NAME]


def imported_modules(*args: str, cwd: Path | None = None) -> set[str]:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "xswarm", *args],
                            capture_output=True, text=True, cwd=cwd, timeout=120)
    return {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:")}


def test_ray_is_imported_only_with_ray(speech: Path, tmp_path: Path) -> None:
    helped = imported_modules("transcribe", "--help")
    assert "typer" in helped and "xswarm.cluster" not in helped and "ray" not in helped
    local = imported_modules("transcribe", "--model", "sphinx-en", str(speech))
    assert "pocketsphinx" in local  # the run happened
    assert "ray" not in local and not any(name.startswith("ray.") for name in local)


def test_expand_inputs_directories_lists_and_duplicates(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "b" / "c").mkdir(parents=True)
    (corpus / ".cache").mkdir()
    for name in ("b/c/z.wav", "b/a.FLAC", "top.mp3", "b/notes.txt", ".hidden.wav",
                 ".cache/x.wav", "b/c/raw.pcm"):
        (corpus / name).write_bytes(b"x")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "l.txt").write_text(
        "# comment\n\n  ../corpus/b/a.FLAC  \n../corpus/b\n" f"{tmp_path}/else.wav\n"
    )
    found = expand_inputs(["corpus", "missing.wav", "@lists/l.txt", "./corpus/top.mp3"],
                          cwd=str(tmp_path))
    assert found == [
        InputFile("corpus/top.mp3", f"{corpus}/top.mp3"),  # a directory's files first,
        InputFile("corpus/b/a.FLAC", f"{corpus}/b/a.FLAC"),  # then its subdirectories, sorted
        InputFile("corpus/b/c/z.wav", f"{corpus}/b/c/z.wav"),
        InputFile("missing.wav", f"{tmp_path}/missing.wav"),  # fails later, alone
        InputFile(f"{tmp_path}/else.wav", f"{tmp_path}/else.wav"),  # absolute stays so
    ]
    with pytest.raises(UsageError, match=r"^@ needs a list file name"):
        expand_inputs(["@"], cwd=str(tmp_path))


def test_manifest_lines_are_whole_even_after_a_cut(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    with Manifest(path) as manifest:
        manifest.append({"type": "file", "file": "a.wav", "status": "done"})
    with open(path, "ab") as file:  # a machine crash cut the next line short
        file.write(b'{"type": "file", "fi')
    assert read_records(path) == [{"type": "file", "file": "a.wav", "status": "done"}]
    with Manifest(path) as manifest:
        manifest.append({"type": "file", "file": "b.wav", "status": "done"})
    assert [r["file"] for r in read_records(path)] == ["a.wav", "b.wav"]
    assert path.read_text().endswith('"status": "done"}\n')


def test_an_output_dir_that_cannot_be_created_is_one_line(speech: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory\n")
    out = str(blocker / "out")
    message = f"--output-dir {out}: cannot create it (Not a directory)"
    check_error(["--ray", "--model", "sphinx-en", "-o", out, str(speech)], 2, message)
    check_error(["--model", "sphinx-en", "-o", out, str(speech)], 2, message)  # the local run too


def test_no_more_workers_than_batches() -> None:
    from xswarm.cluster.job import worker_count

    assert worker_count(None, per_node=False, nodes=2, cpus=8.0, batches=100) == 8  # per CPU
    assert worker_count(None, per_node=True, nodes=2, cpus=8.0, batches=100) == 2  # per node
    assert worker_count(3, per_node=True, nodes=2, cpus=8.0, batches=100) == 3  # --workers
    # a resumed job with one file left starts one worker, not a model load per CPU
    assert worker_count(None, per_node=False, nodes=2, cpus=8.0, batches=1) == 1
    assert worker_count(5, per_node=False, nodes=1, cpus=2.0, batches=3) == 3


def test_a_run_with_everything_done_starts_no_ray_and_logs_start_files_end(
    speech: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "hello.jsonl").write_text("done by an earlier run\n")
    result = run_xswarm("transcribe", "--ray", "--model", "sphinx-en", "-o", str(out), str(speech))
    assert result.returncode == 0, result.stderr
    assert "transcribed 0 of 1 files" in result.stderr and "1 already done" in result.stderr
    lines = read_records(out / MANIFEST_NAME)
    assert [(line["type"], line.get("event") or line.get("status")) for line in lines] == [
        ("job", "start"), ("file", "skipped"), ("job", "end"),  # the start line comes first
    ]
    assert lines[0]["skipped"] == 1 and lines[0]["to_do"] == 0
    assert {line["run"] for line in lines} == {lines[0]["run"]}
    assert (out / "hello.jsonl").read_text() == "done by an earlier run\n"


class _FakeRay:
    """Just enough of the ``ray`` module for :func:`run_job`'s scheduler, scripted per actor:
    ``behave(actor_index, method, args)`` returns the call's value or raises. ``wait`` hands
    back the first reference it is given (loads first, then batches, in the order made)."""

    class exceptions:  # as ray.exceptions
        class RayError(Exception):
            pass

        class RayActorError(RayError):
            pass

    def __init__(self, behave) -> None:  # type: ignore[no-untyped-def]
        self.behave = behave
        self.actors = 0
        self.killed: set[int] = set()

    def is_initialized(self) -> bool:
        return True  # the caller's own session: run_job neither starts nor stops Ray

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}

    def nodes(self) -> list[dict]:
        return [{"NodeID": "n1", "Alive": True, "Resources": {"CPU": 2.0}}]

    def remote(self, cls):  # type: ignore[no-untyped-def]
        fake = self

        class Handle:
            def __init__(self, index: int) -> None:
                self.index = index
                self.load = Method(self, "load")
                self.transcribe = Method(self, "transcribe")

        class Method:
            def __init__(self, actor: Handle, name: str) -> None:
                self.actor, self.name = actor, name

            def remote(self, *args):  # type: ignore[no-untyped-def]
                return lambda: fake.behave(self.actor.index, self.name, args)

        class Options:
            def remote(self, spec):  # type: ignore[no-untyped-def]
                fake.actors += 1
                return Handle(fake.actors - 1)

        class ActorClass:
            def options(self, **_kwargs):  # type: ignore[no-untyped-def]
                return Options()

        return ActorClass()

    def wait(self, refs, num_returns, timeout):  # type: ignore[no-untyped-def]
        return refs[:1], refs[1:]

    def get(self, ref):  # type: ignore[no-untyped-def]
        return ref()

    def kill(self, actor) -> None:  # type: ignore[no-untyped-def]
        self.killed.add(actor.index)


def test_a_dead_worker_is_replaced_once_and_its_files_go_to_an_idle_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xswarm.cluster import job
    from xswarm.cluster.worker import FileResult, WorkerReady

    def behave(index: int, method: str, args: tuple) -> object:
        if method == "load":  # workers 0 and 1 load; every replacement's node is gone
            if index < 2:
                return WorkerReady(f"w{index}", "sphinx-en", 0.1)
            return WorkerReady("?", "", 0.0, error="a worker could not start: node lost",
                               exit_code=1)
        if index == 0:  # worker 0 took both files, then died
            raise _FakeRay.exceptions.RayActorError("the actor died unexpectedly")
        return [FileResult(item.name, "done", 1.0, 0.1, None, f"w{index}") for item in args[0]]

    fake = _FakeRay(behave)
    monkeypatch.setattr(job, "_import_ray", lambda: fake)
    warnings: list[str] = []
    progress = job.ProgressLine(io.StringIO(), live=False, report=warnings.append,
                                warn=warnings.append)
    inputs = [InputFile(n, str(tmp_path / n)) for n in ("a.wav", "b.wav")]
    options = job.ClusterOptions(output_dir=tmp_path / "out", workers=2, model="sphinx-en")
    summary = job.run_job(inputs, options, progress=progress, note=warnings.append)
    assert summary.done == 2 and summary.failed == []  # worker 1 was idle, and took them
    done = [r for r in read_records(tmp_path / "out" / MANIFEST_NAME) if r.get("status") == "done"]
    assert sorted((r["file"], r["worker"]) for r in done) == [("a.wav", "w1"), ("b.wav", "w1")]
    assert fake.actors == 3  # one replacement for the one dead worker, not one per lost batch
    assert [w for w in warnings if "died" in w] == [
        "worker w0 died (the actor died unexpectedly); its files go to the other workers, "
        "and a new worker starts"
    ]


def test_ctrl_c_while_the_headers_are_read_still_ends_the_run_in_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xswarm.cluster import job

    def durations(items: list[InputFile]) -> dict[str, float]:
        if any(item.name == "b.wav" for item in items):  # the to-do files' headers
            raise KeyboardInterrupt  # Ctrl-C during a long read of a large corpus
        return {item.name: 1.0 for item in items}

    monkeypatch.setattr(job, "_durations", durations)
    monkeypatch.setattr(job, "_import_ray", lambda: _FakeRay(None))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jsonl").write_text("done\n")
    inputs = [InputFile(n, str(tmp_path / n)) for n in ("a.wav", "b.wav")]
    progress = job.ProgressLine(io.StringIO(), live=False, report=print)
    with pytest.raises(KeyboardInterrupt):
        job.run_job(inputs, job.ClusterOptions(output_dir=out, model="sphinx-en"),
                    progress=progress, note=print)
    lines = read_records(out / MANIFEST_NAME)
    assert [(r["type"], r.get("event") or r.get("status")) for r in lines] == [
        ("job", "start"), ("file", "skipped"), ("job", "interrupted"),
    ]


def test_sigterm_while_ray_starts_is_an_interruption_not_a_silent_exit_15(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import signal

    from xswarm.cluster import job
    from xswarm.errors import ExitCode, Interrupted

    class Starting(_FakeRay):
        def is_initialized(self) -> bool:
            return False  # a new local runtime: run_job calls ray.init

        def init(self, **_kwargs: object) -> None:  # ray.init's handler: sys.exit(signum)
            raise SystemExit(signal.SIGTERM)

    monkeypatch.setattr(job, "_import_ray", lambda: Starting(None))
    out = tmp_path / "out"
    progress = job.ProgressLine(io.StringIO(), live=False, report=print)
    with pytest.raises(Interrupted) as stopped:
        job.run_job([InputFile("a.wav", str(tmp_path / "a.wav"))],
                    job.ClusterOptions(output_dir=out, model="sphinx-en"),
                    progress=progress, note=print)
    assert stopped.value.exit_code == ExitCode.TERMINATED
    assert read_records(out / MANIFEST_NAME)[-1]["event"] == "interrupted"


def test_the_end_line_is_written_before_ray_shuts_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xswarm.cluster import job

    class Stopping(_FakeRay):
        initialized = False

        def is_initialized(self) -> bool:
            return self.initialized

        def init(self, **_kwargs: object) -> None:
            self.initialized = True

        def shutdown(self) -> None:  # a second Ctrl-C during the shutdown
            raise KeyboardInterrupt

    def behave(index: int, method: str, args: tuple) -> object:
        from xswarm.cluster.worker import FileResult, WorkerReady

        if method == "load":
            return WorkerReady("w0", "sphinx-en", 0.1)
        return [FileResult(item.name, "done", 1.0, 0.1, None, "w0") for item in args[0]]

    monkeypatch.setattr(job, "_import_ray", lambda: Stopping(behave))
    out = tmp_path / "out"
    progress = job.ProgressLine(io.StringIO(), live=False, report=print)
    with pytest.raises(KeyboardInterrupt):
        job.run_job([InputFile("a.wav", str(tmp_path / "a.wav"))],
                    job.ClusterOptions(output_dir=out, model="sphinx-en"),
                    progress=progress, note=print)
    end = read_records(out / MANIFEST_NAME)[-1]
    assert end["type"] == "job" and end["event"] == "end" and end["done"] == 1


def test_auto_without_a_cluster_says_start_one_and_no_token_hint(
    speech: Path, tmp_path: Path
) -> None:
    env = dict(os.environ, RAY_TMPDIR=str(tmp_path / "ray"))  # no cluster recorded there
    env.pop("RAY_ADDRESS", None)
    result = run_xswarm("transcribe", "--ray-address", "auto", "--model", "sphinx-en",
                        "-o", str(tmp_path / "out"), str(speech), env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "xswarm: error: --ray-address auto: could not join the Ray cluster"), result.stderr
    assert lines[0].endswith("; start one with `ray start --head`"), lines[0]


def test_ctrl_c_removes_the_stopped_workers_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xswarm.cluster import job
    from xswarm.cluster.worker import WorkerReady

    out = tmp_path / "out"
    other = ".b.jsonl.elsewhere-7.partial"  # another writer's: not ours to remove

    def behave(index: int, method: str, args: tuple) -> object:
        if method == "load":
            return WorkerReady("node-1:4242", "sphinx-en", 0.1)
        (out / ".a.jsonl.node-1-4242.partial").write_text('{"type": "segment", "te')
        raise KeyboardInterrupt  # Ctrl-C while the driver waits for the result

    monkeypatch.setattr(job, "_import_ray", lambda: _FakeRay(behave))
    out.mkdir()
    (out / other).write_text("")
    progress = job.ProgressLine(io.StringIO(), live=False, report=print)
    with pytest.raises(KeyboardInterrupt):
        job.run_job([InputFile("a.wav", str(tmp_path / "a.wav"))],
                    job.ClusterOptions(output_dir=out, model="sphinx-en"),
                    progress=progress, note=print)
    assert sorted(p.name for p in out.iterdir()) == [other, MANIFEST_NAME]
    assert read_records(out / MANIFEST_NAME)[-1]["event"] == "interrupted"
