"""``xswarm transcribe --ray`` on a real two-node Ray cluster started here, on this machine.

The module fixture starts a head (``ray start --head --block``, one CPU) and
one extra worker node (``ray start --address ... --block``, one CPU), each in
its own process group, with Ray's temp dirs under pytest's tmp dir, small
object stores, and a token made up for the test (nothing is written to
``~/.ray``). Teardown kills both process groups and any process still using
those temp dirs, also when a test failed.

The corpus: 36 short flite sentences (in two directories and a ``@list``) and
4 bad files (empty, not audio, a truncated header, a NaN sample part-way).
The local ``xswarm transcribe --output-dir`` run of the same inputs is the
reference: the cluster's outputs must be byte-identical to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.speech import SENTENCES, flite_speech
from xswarm.cluster.manifest import MANIFEST_NAME

GOOD_FILES = 36
BAD_FILES = {  # file name -> what its error says
    "empty.wav": "is empty (0 bytes)",
    "notes.wav": "not an audio file libsndfile can read",
    "truncated.wav": "not an audio file libsndfile can read",
    "nan.wav": "NaN sample at",
}
START_TIMEOUT = 90.0  # s for the two nodes to come up on a busy 2-core machine
RUN_TIMEOUT = 240.0  # s for one transcription run of the corpus


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ray_env(tmp: Path, token: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",  # as a real cluster should run; the token is the test's own
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TMPDIR=str(tmp),  # a local runtime (no --ray-address) keeps its files here too
        XSWARM_HOME=str(tmp / "home"),  # module-scoped: conftest's per-test home is not set yet
        HF_HUB_OFFLINE="1",
    )
    env.pop("RAY_ADDRESS", None)
    return env


class Cluster:
    """The running test cluster: its addresses and the environment its clients need."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = _ray_env(root, secrets.token_hex(32))
        self.gcs_port = _free_port()
        self.client_port = _free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.gcs_address = ""

    def start(self) -> None:
        head_dir, worker_dir = self.root / "h", self.root / "w"
        head_dir.mkdir()
        worker_dir.mkdir()
        common = [
            "--num-cpus", "1", "--object-store-memory", str(80 * 1024 * 1024),
            "--disable-usage-stats", "--block",
        ]
        self._spawn(
            ["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.gcs_port),
             "--ray-client-server-port", str(self.client_port), "--include-dashboard", "false",
             "--temp-dir", str(head_dir), *common],
            "head",
        )
        # Ray replaces 127.0.0.1 by this machine's address: read the one it uses
        current = head_dir / "ray_current_cluster"
        self._wait(lambda: current.exists() and current.read_text().strip() != "", "the head")
        self.gcs_address = current.read_text().strip()
        self._wait(lambda: _listening(self.gcs_address), "the head's GCS port")
        self._spawn(["--address", self.gcs_address, "--temp-dir", str(worker_dir), *common],
                    "worker")
        self._wait(self._two_nodes, "the worker node to join")
        self._wait(lambda: _listening(f"127.0.0.1:{self.client_port}"), "the Ray client port")

    def _spawn(self, args: list[str], name: str) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        ray = str(Path(sys.executable).with_name("ray"))
        self.processes.append(subprocess.Popen(
            [ray, "start", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        ))
        log.close()

    def _wait(self, ready, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            for process in self.processes:
                if process.poll() is not None:
                    logs = "".join(p.read_text(errors="replace")[-2000:]
                                   for p in self.root.glob("*.log"))
                    pytest.fail(f"ray start exited ({process.returncode}) waiting for {what}:\n"
                                f"{logs}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.3)

    def _two_nodes(self) -> bool:
        # each node's raylet writes its address file; the worker's appears once it joined
        return len(list(self.root.glob("w/session_*/logs/raylet.out"))) > 0 and _alive_nodes(
            self.env, self.gcs_address) == 2

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        _kill_users_of(self.root)


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _alive_nodes(env: dict[str, str], address: str) -> int:
    probe = subprocess.run(
        [sys.executable, "-c",
         f"import logging, ray; ray.init(address={address!r}, logging_level=logging.ERROR, "
         "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    lines = probe.stdout.split()
    return int(lines[-1]) if probe.returncode == 0 and lines else 0


def _kill_users_of(root: Path) -> None:
    """Kill, by pid, any process still naming our temp dir (a worker orphaned by a crash)."""
    for pid in _processes_naming(root):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("ray"))  # short: Ray's socket paths must fit
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """(root, the command's input arguments, the input names it must expand to, in order)."""
    root = tmp_path_factory.mktemp("corpus")
    talks, extra, lists = root / "talks", root / "extra", root / "lists"
    for directory in (talks / "a", talks / "b" / "deeper", extra, lists):
        directory.mkdir(parents=True)
    homes = [talks / "a"] * 12 + [talks / "b" / "deeper"] * 12 + [extra] * 12
    made: list[Path] = []
    for i, home in enumerate(homes):
        path = home / f"s{i:02d}.wav"
        flite_speech(SENTENCES[i % len(SENTENCES)], path, lead_seconds=0.2, tail_seconds=0.2)
        made.append(path)
    (talks / "a" / "readme.txt").write_text("not an audio extension: never an input\n")
    (talks / "a" / ".hidden.wav").write_bytes(b"")  # hidden: never an input
    bad = talks / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "notes.wav").write_text("just some text, not audio\n" * 20)
    (bad / "truncated.wav").write_bytes(made[0].read_bytes()[:30])
    samples = np.full(16_000, 0.1, np.float32)
    samples[12_000] = np.nan  # decodes for 0.75 s, then fails: the mid-stream error path
    sf.write(bad / "nan.wav", samples, 16_000, subtype="FLOAT")
    # the list names files relative to itself, with a comment and a duplicate of a talk
    listed = [f"../extra/{p.name}" for p in made[24:]]
    (lists / "more.txt").write_text(
        "# the extra files\n" + "\n".join(listed) + "\n\n../talks/a/s00.wav\n"
    )
    arguments = ["talks", "@lists/more.txt"]
    names = (
        [f"talks/a/{p.name}" for p in made[:12]]
        + [f"talks/b/deeper/{p.name}" for p in made[12:24]]
        + [f"talks/bad/{name}" for name in sorted(BAD_FILES)]
        + [f"extra/{p.name}" for p in made[24:]]
    )
    return root, arguments, names


def xswarm(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xswarm", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=RUN_TIMEOUT,
    )


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The local run's outputs (name -> bytes): ``xswarm transcribe --output-dir``, no Ray."""
    root, _, names = corpus
    out = tmp_path_factory.mktemp("local")
    home = tmp_path_factory.mktemp("home")
    result = xswarm("transcribe", "--model", "sphinx-en", "-o", str(out), *names, cwd=root,
                    env=dict(os.environ, XSWARM_HOME=str(home), HF_HUB_OFFLINE="1"))
    assert result.returncode == 2, result.stderr  # the bad files
    for name, reason in BAD_FILES.items():
        assert f"talks/bad/{name}: {reason}" in result.stderr
    outputs = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(outputs) == GOOD_FILES
    return outputs


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.name != MANIFEST_NAME}


def test_corpus_on_two_nodes_matches_the_local_run(cluster: Cluster, corpus, reference,
                                                    tmp_path: Path) -> None:
    root, arguments, names = corpus
    out = tmp_path / "out"
    address = f"ray://127.0.0.1:{cluster.client_port}"  # the Ray client, as from a laptop
    result = xswarm("transcribe", "--ray-address", address, "--model", "sphinx-en",
                    "-o", str(out), *arguments, cwd=root, env=cluster.env)
    assert result.returncode == 2, result.stderr
    assert outputs(out) == reference  # byte for byte, bad files absent

    lines = manifest_lines(out)
    files = [line for line in lines if line["type"] == "file"]
    assert sorted(line["file"] for line in files) == sorted(names)  # each input once
    done = [line for line in files if line["status"] == "done"]
    failed = {line["file"]: line for line in files if line["status"] == "failed"}
    assert len(done) == GOOD_FILES
    assert sorted(failed) == sorted(f"talks/bad/{name}" for name in BAD_FILES)
    for name, reason in BAD_FILES.items():
        assert failed[f"talks/bad/{name}"]["error"].startswith(f"talks/bad/{name}: {reason}")
        assert f"talks/bad/{name}: {reason}" in result.stderr
    workers = {line["worker"] for line in done}
    assert len(workers) == 2, workers  # one actor per node, both used
    for line in done:
        info = sf.info(str(root / line["file"]))
        assert line["duration"] == pytest.approx(info.frames / info.samplerate, abs=0.01)
        assert line["model"] == "sphinx-en" and line["error"] is None
        assert line["output"] == Path(line["file"]).stem + ".jsonl"
    assert [line["event"] for line in lines if line["type"] == "job"] == ["start", "end"]

    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"xswarm: error: transcribed {GOOD_FILES} of 40 files")
    assert "4 failed: " in summary and all(name in summary for name in BAD_FILES)
    assert "ray: 40/40 files" in result.stderr and "h/h" in result.stderr

    # a rerun does nothing twice: every good file skipped, outputs untouched
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST_NAME}
    again = xswarm("transcribe", "--ray-address", cluster.gcs_address, "--model", "sphinx-en",
                   "-o", str(out), *arguments, cwd=root, env=cluster.env)
    assert again.returncode == 2, again.stderr
    rerun = [line for line in manifest_lines(out)[len(lines):] if line["type"] == "file"]
    assert sorted(line["file"] for line in rerun if line["status"] == "skipped") == sorted(
        line["file"] for line in done)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()
            if p.name != MANIFEST_NAME} == before
    assert outputs(out) == reference


def test_driver_killed_midway_then_rerun_completes_without_redoing(
    cluster: Cluster, corpus, reference, tmp_path: Path
) -> None:
    root, arguments, names = corpus
    out = tmp_path / "out"
    command = [sys.executable, "-m", "xswarm", "transcribe", "--ray-address",
               cluster.gcs_address, "--model", "sphinx-en", "--workers", "1",
               "-o", str(out), *arguments]
    driver = subprocess.Popen(command, cwd=root, env=cluster.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while sum(line["status"] == "done" for line in _file_lines(out)) < 8:
            assert driver.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    first = _file_lines(out)
    done_first = {line["file"] for line in first if line["status"] == "done"}
    assert 8 <= len(done_first) < GOOD_FILES, "not killed midway"
    # Ray kills a dead driver's actors; wait for ours to be gone before looking
    worker_pids = {int(line["worker"].rsplit(":", 1)[1]) for line in first if line["worker"]}
    _wait_gone(worker_pids)
    survivors = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()
                 if p.name != MANIFEST_NAME and not p.name.startswith(".")}
    for name in survivors:  # whatever is in place is complete
        assert (out / name).read_bytes() == reference[name]

    # the rerun, on both nodes; one of its workers is killed midway (a lost machine)
    rerun = subprocess.Popen(
        [*command[:command.index("--workers")], *command[command.index("--workers") + 2:]],
        cwd=root, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            fresh = [line for line in _file_lines(out)[len(first):] if line["status"] == "done"]
            if len(fresh) >= 2:
                break
            assert rerun.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        victim = int(fresh[0]["worker"].rsplit(":", 1)[1])
        os.kill(victim, signal.SIGKILL)
        _, stderr = rerun.communicate(timeout=RUN_TIMEOUT)
    finally:
        if rerun.poll() is None:
            rerun.kill()
    assert rerun.returncode == 2, stderr  # the bad files only
    assert "4 failed: " in stderr.strip().splitlines()[-1]
    assert f"xswarm: warning: worker {fresh[0]['worker']} died" in stderr
    assert outputs(out) == reference  # every output complete and valid
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp left
    for name, identity in survivors.items():  # nothing in place was written again
        stat = (out / name).stat()
        assert (stat.st_ino, stat.st_mtime_ns) == identity, name

    lines = _file_lines(out)
    second = lines[len(first):]
    assert sorted(line["file"] for line in second) == sorted(names)  # each input once
    for name in names:
        if name.startswith("talks/bad/"):
            continue
        transcribed = [line for line in lines if line["file"] == name
                       and line["status"] == "done"]
        assert len(transcribed) <= 1, name  # never transcribed twice
        status = next(line["status"] for line in second if line["file"] == name)
        output = Path(name).stem + ".jsonl"
        # done before the kill (recorded or not) -> skipped now; otherwise done now
        assert status == ("skipped" if output in survivors else "done"), name
        assert (name in done_first) <= (output in survivors)


def _file_lines(out: Path) -> list[dict]:
    if not (out / MANIFEST_NAME).exists():
        return []
    return [line for line in manifest_lines(out) if line["type"] == "file"]


def _wait_gone(pids: set[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"worker {pid} outlived its driver"
            time.sleep(0.1)


def test_local_runtime_without_an_address(
    corpus, reference, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``--ray`` alone starts a private local Ray runtime, and stops it at the end."""
    root, _, names = corpus
    tmp_path = tmp_path_factory.mktemp("rl")  # short: Ray's socket paths must fit in 107 bytes
    out = tmp_path / "out"
    env = _ray_env(tmp_path, secrets.token_hex(32))
    some = names[:3]
    result = xswarm("transcribe", "--ray", "--workers", "2", "--model", "sphinx-en",
                    "-o", str(out), *some, cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("transcribed 3 of 3 files")
    assert outputs(out) == {Path(n).stem + ".jsonl": reference[Path(n).stem + ".jsonl"]
                            for n in some}
    lines = manifest_lines(out)
    assert [line["status"] for line in lines if line["type"] == "file"] == ["done"] * 3
    assert lines[0]["address"] == "local"
    deadline = time.monotonic() + 20
    while _processes_naming(tmp_path):  # the runtime's processes end with the command
        assert time.monotonic() < deadline, "the local Ray runtime outlived the command"
        time.sleep(0.2)


def _processes_naming(directory: Path) -> list[int]:
    marker = str(directory).encode()
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def test_ctrl_c_stops_cleanly_and_the_manifest_says_so(
    cluster: Cluster, corpus, reference, tmp_path: Path
) -> None:
    root, arguments, _ = corpus
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [sys.executable, "-m", "xswarm", "transcribe", "--ray-address", cluster.gcs_address,
         "--model", "sphinx-en", "--workers", "1", "-o", str(out), *arguments],
        cwd=root, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # a shell's background job inherits SIGINT ignored: give the command Ctrl-C back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while sum(line["status"] == "done" for line in _file_lines(out)) < 3:
            assert driver.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, stderr
    assert "run the same command again to resume" in stderr.strip().splitlines()[-1]
    lines = manifest_lines(out)  # every line whole, the last one says what happened
    assert lines[-1]["type"] == "job" and lines[-1]["event"] == "interrupted"
    done = [line for line in lines if line["type"] == "file" and line["status"] == "done"]
    assert lines[-1]["done"] == len(done) >= 3
    for line in done:
        assert (out / line["output"]).read_bytes() == reference[line["output"]]


def test_a_model_no_worker_can_load_fails_the_job_in_one_line(
    cluster: Cluster, corpus, tmp_path: Path
) -> None:
    root, _, names = corpus
    out = tmp_path / "out"
    result = xswarm("transcribe", "--ray-address", cluster.gcs_address, "--model",
                    "no-such-model", "-o", str(out), names[0], cwd=root, env=cluster.env)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("xswarm: error: ") and "no-such-model" in last, result.stderr
    end = manifest_lines(out)[-1]
    assert end["event"] == "failed" and "no-such-model" in end["error"]
    assert outputs(out) == {}


def test_joining_a_token_cluster_without_the_token_says_so_in_one_line(
    cluster: Cluster, corpus, tmp_path: Path
) -> None:
    root, _, names = corpus
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env.update(HOME=str(tmp_path), RAY_gcs_server_port_wait_time_s="2")  # no ~/.ray/auth_token
    result = xswarm("transcribe", "--ray-address", cluster.gcs_address, "--model", "sphinx-en",
                    "-o", str(tmp_path / "out"), names[0], cwd=root, env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # Ray's retry log lines are not shown
    assert lines[0].startswith(f"xswarm: error: --ray-address {cluster.gcs_address}: could not "
                               "join the Ray cluster"), lines[0]
    assert "the cluster uses token authentication: run with RAY_AUTH_MODE=token" in lines[0]
