"""The embedded Ray of `inpaint run`: every server on loopback, nothing of Ray's on the
user's terminal, and nothing left running after a killed command.

The slow tests run the real command (`inpaint run`, which starts and stops its own Ray) in
subprocesses; the pytest process's own Ray (the `local_ray` fixture) is never involved.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline import localray
from pipeline.masks import synthetic_mask
from tests.conftest import save, save_mask, small_photo

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
# What `inpaint run` may print on a terminal: its progress bar and its summary.
EXPECTED_LINES = [
    re.compile(r"restoring [━╺╸─ ]*\d+/\d+( [\d.]+ items/s)? +(-:--:--|\d+:\d\d:\d\d)"),
    re.compile(r"run \S+: \d+ ok; 0 already done; [\d.]+s"),
    re.compile(r"(manifest|report): \S+"),
]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def family(process: psutil.Process) -> list[psutil.Process]:
    with_children = [process]
    with contextlib.suppress(psutil.Error):
        with_children += process.children(recursive=True)
    return with_children


def restorers(process: psutil.Process) -> list[psutil.Process]:
    found = []
    for member in family(process):
        try:
            if "ray::Restorer" in " ".join(member.cmdline()):
                found.append(member)
        except psutil.Error:
            pass
    return found


def listening(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of `processes`."""
    names = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            names[process.pid] = process.name()
    return [(names[c.pid], c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in names]


def wait_for(condition, what: str, limit: float = 600.0):
    """Poll until `condition()` is truthy (the machine may be loaded: no timing claims)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def slow_archive(root: Path, count: int) -> tuple[Path, Path]:
    """Photos whose fill takes about a second each (Telea with a wide radius)."""
    for index in range(count):
        photo = small_photo(["chelsea", "coffee", "rocket", "astronaut"][index % 4], 384)
        save(photo, root / "images" / f"photo-{index:02d}.png")
        hole = synthetic_mask("strokes", photo.shape[0], photo.shape[1], seed=index)
        save_mask(hole, root / "masks" / f"photo-{index:02d}.png")
    return root / "images", root / "masks"


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    """`inpaint run` on the bundled examples in a pseudo-terminal, as a user types it; the
    listening sockets of its processes are sampled while its actors restore."""
    out = tmp_path_factory.mktemp("terminal") / "restored"
    command = ["inpaint", "run", "examples/images", "--masks", "examples/masks", "--out",
               str(out), "--method", "telea"]
    master, slave = pty.openpty()
    process = subprocess.Popen(command, cwd=REPO, stdin=slave, stdout=slave, stderr=slave,
                               env=os.environ | {"COLUMNS": "100", "TERM": "xterm"})
    os.close(slave)
    chunks = []

    def read():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the command has exited and closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    driver = psutil.Process(process.pid)
    sockets = []
    try:
        wait_for(lambda: restorers(driver) or process.poll() is not None, "a restoring actor")
        sockets = listening(family(driver))
    finally:
        returncode = process.wait(timeout=600)
        reader.join(timeout=30)
        os.close(master)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return {"returncode": returncode, "lines": lines, "sockets": sockets, "out": out}


@pytest.mark.slow
def test_the_embedded_ray_listens_on_loopback_only(terminal_run):
    sockets = terminal_run["sockets"]
    servers = {name for name, _, _ in sockets}
    # The GCS, the raylet and the restoring worker at least: proof the sample saw a live Ray.
    assert {"gcs_server", "raylet"} <= servers, sockets
    assert any(name.startswith("ray::Restorer") for name in servers), sockets
    assert [s for s in sockets if s[1] not in LOOPBACK] == []


@pytest.mark.slow
def test_a_terminal_run_prints_only_the_progress_bar_and_the_summary(terminal_run):
    assert terminal_run["returncode"] == 0, terminal_run["lines"]
    strays = [line for line in terminal_run["lines"]
              if not any(pattern.fullmatch(line) for pattern in EXPECTED_LINES)]
    assert strays == []
    joined = "\n".join(terminal_run["lines"])
    assert "Actor with class name" not in joined and "WARNING" not in joined
    assert re.search(r"run \S+: 5 ok; 0 already done", joined)
    assert (terminal_run["out"] / "_report" / "index.html").exists()


def start_a_command(*args: str, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", *args], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            **options)


def record_of(pid: int, records: Path = localray.RECORDS) -> dict:
    path = records / f"{pid}.json"
    return json.loads(wait_for(lambda: path.exists() and path.read_text(), f"{path}"))


def alive(processes: list[list]) -> list[int]:
    return [pid for pid, created in processes if localray._same_process(pid, created)]


@pytest.fixture
def own_temp():
    """A temp folder of this test's commands alone (TMPDIR; short, for Ray's sockets): their
    records and Ray sessions go there, so no other command on the machine that starts a Ray
    (a parallel test worker, another user's run) reaps the killed one's processes first."""
    folder = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))
    yield {"env": os.environ | {"TMPDIR": str(folder)}, "records": folder / localray.RECORDS.name}
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_killed_command_leaves_nothing_of_its_ray_once_the_next_one_starts(tmp_path,
                                                                              own_temp):
    images, masks = slow_archive(tmp_path, 12)
    env, records = own_temp["env"], own_temp["records"]
    killed = subprocess.Popen(
        ["inpaint", "run", str(images), "--masks", str(masks), "--out", str(tmp_path / "out"),
         "--method", "telea", "--param", "radius=20", "--workers", "2", "--batch-size", "1"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    # Another command, still running: its Ray is its own and must be left alone.
    running = start_a_command(
        "from pipeline import localray; import sys; localray.start(num_cpus=1, "
        "include_dashboard=False); print('up', flush=True); sys.stdin.read(); localray.stop()",
        env=env)
    try:
        wait_for(lambda: restorers(psutil.Process(killed.pid)), "a restoring actor")
        record = record_of(killed.pid, records)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert running.stdout.readline().strip() == "up"
        bystander = record_of(running.pid, records)["processes"]
        # Ray's agents outlive a killed driver: the record is what finds them.
        assert alive(record["processes"]), "nothing outlived the driver: nothing to prove"

        following = start_a_command(
            "from pipeline import localray; localray.start(num_cpus=1, "
            "include_dashboard=False); localray.stop()", env=env)
        following.communicate(timeout=300)
        assert following.returncode == 0

        assert alive(record["processes"]) == []
        assert not (records / f"{killed.pid}.json").exists()
        assert sorted(alive(bystander)) == sorted(pid for pid, _ in bystander)
    finally:
        running.communicate(input="", timeout=300)
        if killed.poll() is None:
            killed.kill()


def test_a_record_only_stops_its_own_processes(tmp_path, monkeypatch):
    """A recorded pid now held by another process (a different start time) is left alone,
    and so is everything of a record whose command still runs."""
    monkeypatch.setattr(localray, "RECORDS", tmp_path)
    finished = subprocess.Popen(["true"])
    finished.wait()
    sleeper = psutil.Process(subprocess.Popen(["sleep", "300"]).pid)
    me = psutil.Process()
    try:
        def write(name: str, driver: list, created: float) -> None:
            (tmp_path / f"{name}.json").write_text(json.dumps(
                {"driver": driver, "processes": [[sleeper.pid, created]]}))

        write("reused", [finished.pid, 0.0], sleeper.create_time() + 1)
        write("running", [me.pid, me.create_time()], sleeper.create_time())
        assert localray.reap_orphans() == []
        assert sleeper.is_running() and sleeper.status() != psutil.STATUS_ZOMBIE
        assert sorted(p.name for p in tmp_path.iterdir()) == ["running.json"]

        write("orphaned", [finished.pid, 0.0], sleeper.create_time())
        assert localray.reap_orphans() == [sleeper.pid]
        sleeper.wait(timeout=30)
        assert not sleeper.is_running()
    finally:
        if sleeper.is_running():
            sleeper.kill()


def test_records_in_a_folder_others_can_write_are_not_trusted(tmp_path, monkeypatch):
    """Another user who could write records there could have us stop any of our processes."""
    monkeypatch.setattr(localray, "RECORDS", tmp_path)
    finished = subprocess.Popen(["true"])
    finished.wait()
    sleeper = psutil.Process(subprocess.Popen(["sleep", "300"]).pid)
    try:
        (tmp_path / "planted.json").write_text(json.dumps(
            {"driver": [finished.pid, 0.0], "processes": [[sleeper.pid, sleeper.create_time()]]}))
        tmp_path.chmod(0o777)
        assert localray.reap_orphans() == []
        assert sleeper.is_running() and sleeper.status() != psutil.STATUS_ZOMBIE
        tmp_path.chmod(0o700)
        assert localray.reap_orphans() == [sleeper.pid]
    finally:
        tmp_path.chmod(0o700)
        if sleeper.is_running():
            sleeper.kill()
