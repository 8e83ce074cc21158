"""Cluster jobs through the CLI, on a real `ray start --head` with token auth on loopback.

The head gets the loopback S3 server's AWS variables, as a cloud cluster gets an instance
role: jobs reach the bucket without any credential travelling with the submission.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import cluster, jobspec
from pipeline.cli import app
from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PHOTOS = 5


def free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def stop_process_group(group: int) -> None:
    """Stop this fixture's Ray only: `ray stop` would end every Ray on the machine."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        time.sleep(grace)


@pytest.fixture(scope="module")
def ray_head(s3_server):
    """A Ray head on 127.0.0.1 in token mode, in its own process group and temp dir."""
    workdir = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))  # short: socket paths
    token_path = workdir / "token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    gcs, dashboard, client, agent = free_ports(4)
    endpoint, _ = s3_server
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("RAY_", "AWS_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path),
               AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
               AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY, AWS_DEFAULT_REGION="us-east-1",
               RAY_DATA_DISABLE_PROGRESS_BARS="1")
    command = ["ray", "start", "--head", "--node-ip-address", "127.0.0.1",
               "--dashboard-host", "127.0.0.1", "--port", str(gcs),
               "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client),
               "--dashboard-agent-listen-port", str(agent), "--num-cpus", "2",
               "--temp-dir", str(workdir / "ray"), "--disable-usage-stats"]
    log = workdir / "start.log"
    with log.open("wb") as sink:
        starter = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        if starter.wait(timeout=90) != 0:
            pytest.fail(f"ray start failed:\n{log.read_text()[-3000:]}")
        yield {"address": f"http://127.0.0.1:{dashboard}", "token_path": token_path,
               "token": token_path.read_text()}
    finally:
        stop_process_group(starter.pid)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def cli(ray_head, monkeypatch):
    """Run `inpaint ...` against the fixture's cluster, as a user with the token file would:
    RAY_AUTH_MODE unset on this side, as on a laptop."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_head["token_path"]))
    monkeypatch.chdir(ROOT)

    def invoke(*args: str):
        result = CliRunner().invoke(app, [*args, "--address", ray_head["address"]])
        for secret in (ray_head["token"], SECRET_ACCESS_KEY):
            assert secret not in result.output
        return result

    return invoke


@pytest.mark.slow
@pytest.mark.cluster
def test_example_spec_runs_as_shipped_and_a_resubmission_starts_nothing(cli, tmp_path):
    out = tmp_path / "dataset"
    result = cli("submit", "jobs/preprocess-dataset.yaml", "--out", str(out), "--wait")
    assert result.exit_code == 0, result.output
    job_id = result.stdout.splitlines()[0]
    assert job_id.startswith("preprocess-dataset-")  # no schedule: name, time, random
    assert "5 ok" in result.stdout  # the job's own summary, streamed by --wait
    restored = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")
                      if not p.relative_to(out).as_posix().startswith("_"))
    assert len(restored) == EXAMPLE_PHOTOS  # the spec's output_format: png
    rows = pq.read_table(out / "_manifest").to_pylist()
    assert len(rows) == EXAMPLE_PHOTOS
    assert {row["status"] for row in rows} == {"ok"}
    assert {row["run_id"] for row in rows} == {job_id}  # the manifest names its Ray job
    assert json.loads(rows[0]["params"])["method_params"]["radius"] == 3  # from the spec

    again = cli("submit", "jobs/preprocess-dataset.yaml", "--out", str(out),
                "--submission-id", job_id, "--wait")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == job_id
    assert "submitted before (SUCCEEDED); nothing new started" in again.stderr
    assert cli("jobs").stdout.count(job_id) == 1
    assert len(pq.read_table(out / "_manifest").to_pylist()) == EXAMPLE_PHOTOS


@pytest.mark.slow
@pytest.mark.cluster
def test_status_logs_jobs_and_stop_on_a_running_scheduled_job(cli, tmp_path):
    # A GPU request on a CPU-only cluster: the driver starts (it asks for no GPU), the
    # restoring actors wait for a GPU that never comes; a running job to watch and stop.
    args = ("submit", "jobs/restore-archive.yaml", "--method", "telea", "--gpus-per-worker",
            "1", "--out", str(tmp_path / "out"))
    submitted = cli(*args)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    slot = jobspec.load(ROOT / "jobs/restore-archive.yaml").schedule_slot()
    assert job_id == f"restore-archive-{slot:%Y%m%dT%H%MZ}"  # derived from name + slot
    deadline = time.monotonic() + 60
    while "restoring" not in (logs := cli("logs", job_id)).stdout:
        assert time.monotonic() < deadline, logs.output
        time.sleep(0.5)
    assert "1 GPU each" in logs.stdout  # the driver runs: it reserved no GPU for itself
    status = cli("status", job_id)
    assert status.exit_code == 0 and f"{job_id}: RUNNING" in status.stdout
    assert job_id in cli("jobs").stdout
    retried = cli(*args)  # a cron retry in the same slot
    assert "was submitted before (RUNNING); nothing new started" in retried.stderr

    stopped = cli("stop", job_id)
    assert stopped.exit_code == 0 and "stop requested" in stopped.stderr
    followed = cli("logs", job_id, "--follow")
    assert followed.exit_code == cluster.EXIT_STOPPED, followed.output
    assert "STOPPED" in followed.stderr
    assert f"{job_id}: STOPPED" in cli("status", job_id).stdout
    assert "had already ended (STOPPED)" in cli("stop", job_id).stderr
    assert cli("jobs").stdout.count(job_id) == 1
    unknown = cli("status", "no-such-job")
    assert unknown.exit_code == 2 and "no such job on the cluster at" in unknown.stderr


@pytest.mark.slow
@pytest.mark.cluster
def test_job_on_a_missing_bucket_fails_with_a_readable_reason(cli, tmp_path):
    spec = tmp_path / "missing.yaml"
    spec.write_text("name: missing-bucket\n"
                    "images: s3://no-such-bucket-for-inpaint/scans\n"
                    "out: s3://no-such-bucket-for-inpaint/restored\n"
                    "method: telea\n"
                    "storage_options_env:\n  endpoint_url: AWS_ENDPOINT_URL\n")
    result = cli("submit", str(spec), "--wait")
    assert result.exit_code == 2, result.output  # a configuration error, as `inpaint run`
    assert "error: IMAGES not found: s3://no-such-bucket-for-inpaint/scans" in result.stdout
    assert "FAILED: Job entrypoint command failed with exit code 2" in result.stderr
    assert result.stderr.count("not found") == 0  # Ray's copy of the logs is left out


@pytest.mark.slow
@pytest.mark.cluster
def test_missing_or_wrong_token_gives_a_clear_message(ray_head, monkeypatch, tmp_path):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token either
    missing = CliRunner().invoke(app, ["jobs", "--address", ray_head["address"]])
    assert missing.exit_code == 2
    assert "requires a Ray auth token and none was found" in missing.output
    assert "RAY_AUTH_TOKEN_PATH" in missing.output

    wrong = secrets.token_hex(32)
    monkeypatch.setenv("RAY_AUTH_TOKEN", wrong)
    rejected = CliRunner().invoke(app, ["status", "x", "--address", ray_head["address"]])
    assert rejected.exit_code == 2
    assert "rejected the Ray auth token read from RAY_AUTH_TOKEN" in rejected.output
    assert wrong not in rejected.output and ray_head["token"] not in rejected.output


def test_unreachable_cluster_says_how_to_reach_one(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    (port,) = free_ports(1)
    result = CliRunner().invoke(app, ["jobs", "--address", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert f"cannot reach the Ray Jobs API at http://127.0.0.1:{port}" in result.output
    assert "ray dashboard cluster.yaml" in result.output


def test_submission_ids_are_derived_from_name_and_schedule_slot():
    spec = jobspec.parse("name: nightly\nimages: a\nout: b\nschedule: '0 3 * * *'\n", "s.yaml")
    first_try = datetime(2026, 11, 25, 3, 0, 4, tzinfo=UTC)
    cron_retry = datetime(2026, 11, 25, 3, 17, tzinfo=UTC)
    next_night = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    assert cluster.derive_submission_id(spec, first_try) == "nightly-20261125T0300Z"
    assert cluster.derive_submission_id(spec, cron_retry) == "nightly-20261125T0300Z"
    assert cluster.derive_submission_id(spec, next_night) == "nightly-20261126T0300Z"
    unscheduled = jobspec.parse("name: once\nimages: a\nout: b\n", "s.yaml")
    one, two = (cluster.derive_submission_id(unscheduled) for _ in range(2))
    assert one.startswith("once-") and one != two


def test_gpu_requests_reach_the_actors_not_the_driver():
    spec = jobspec.parse("name: gpu\nimages: a\nout: b\ngpus_per_worker: 1\n", "s.yaml")
    request = cluster.submit_request(spec, "gpu-1")
    assert "entrypoint_num_gpus" not in request and "entrypoint_resources" not in request
    assert request["entrypoint"].startswith("python -m jobs.restore --spec-json ")
    assert '"gpus_per_worker":1.0' in request["entrypoint"]
    assert request["runtime_env"]["working_dir"] == str(ROOT)
    assert ".git" in request["runtime_env"]["excludes"]
