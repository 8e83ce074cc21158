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
from tests.jobsapi import RAY_VERSION, JobsApi, job_details
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
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:  # the group is gone once its last member is
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class Head:
    """A Ray head on 127.0.0.1 in token mode, in its own process group and temp dir; the
    token and ports are chosen before it starts, so a client can be pointed at it first."""

    def __init__(self, s3_server):
        self.workdir = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))  # short: sockets
        self.token_path = self.workdir / "token"
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self.token = self.token_path.read_text()
        self.gcs, dashboard, self.client_port, self.agent = free_ports(4)
        self.address = f"http://127.0.0.1:{dashboard}"
        endpoint, _ = s3_server
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith(("RAY_", "AWS_"))}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path),
                        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
                        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
                        AWS_DEFAULT_REGION="us-east-1", RAY_DATA_DISABLE_PROGRESS_BARS="1")
        self.starter: subprocess.Popen | None = None

    def start(self) -> None:
        command = ["ray", "start", "--head", "--node-ip-address", "127.0.0.1",
                   "--dashboard-host", "127.0.0.1", "--port", str(self.gcs),
                   "--dashboard-port", self.address.rsplit(":", 1)[1],
                   "--ray-client-server-port", str(self.client_port),
                   "--dashboard-agent-listen-port", str(self.agent), "--num-cpus", "2",
                   "--temp-dir", str(self.workdir / "ray"), "--disable-usage-stats"]
        log = self.workdir / "start.log"
        with log.open("wb") as sink:
            self.starter = subprocess.Popen(command, env=self.env, stdout=sink,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        if self.starter.wait(timeout=90) != 0:
            pytest.fail(f"ray start failed:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.starter is not None:
            stop_process_group(self.starter.pid)
        shutil.rmtree(self.workdir, ignore_errors=True)


def client_env(head: Head) -> dict[str, str]:
    """A user's environment with the head's token file: no RAY_ or AWS_ variables."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("RAY_", "AWS_"))}
    env["RAY_AUTH_TOKEN_PATH"] = str(head.token_path)
    return env


@pytest.fixture(scope="module")
def ray_head(s3_server, tmp_path_factory):
    """One head for the module. An `inpaint submit` is started before it, as right after
    `ray start` in a script: test_submit_right_after_ray_start_waits_for_the_head reads
    what it did, and no second head has to start and stop for that test."""
    head = Head(s3_server)
    folder = tmp_path_factory.mktemp("early")
    early = subprocess.Popen(
        ["inpaint", "submit", str(quick_spec(folder, "early")), "--address", head.address,
         "--wait-for-cluster", "240"],
        env=client_env(head), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        first = early.stderr.readline()  # submitted before the head exists: it waits
        head.start()
        yield {"address": head.address, "token_path": head.token_path, "token": head.token,
               "early": early, "early_first_line": first, "env": client_env(head)}
    finally:
        early.kill()  # a no-op once the test has read it to the end
        early.wait(timeout=30)
        head.stop()


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
    # OUT writable (it is checked first, with a real write), IMAGES in a missing bucket
    spec.write_text("name: missing-bucket\n"
                    "images: s3://no-such-bucket-for-inpaint/scans\n"
                    f"out: {tmp_path}/restored\n"
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


def quick_spec(tmp_path: Path, name: str) -> Path:
    """A spec whose job ends at once (its images are missing): these tests are about
    getting a job submitted, not about running it."""
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"name: {name}\nimages: {tmp_path}/nowhere\nout: {tmp_path}/out\n"
                    "method: telea\n")
    return spec


@pytest.mark.slow
@pytest.mark.cluster
def test_submit_waits_out_a_head_whose_job_agent_is_not_up_yet(cli, ray_head, tmp_path):
    with JobsApi(upstream=ray_head["address"]) as head:
        # What a head answers while its job agent starts, twice; then the head itself.
        head.refuse("POST", "/api/jobs/", [(500, "No available agent to submit job, please "
                                                 "try again later.")] * 2)
        result = CliRunner().invoke(app, ["submit", str(quick_spec(tmp_path, "agent")),
                                          "--address", head.url])
        assert result.exit_code == 0, result.output
        assert result.stderr.count("is not ready (No available agent to submit job, please "
                                   "try again later); waiting for it") == 2
        assert head.count("POST", "/api/jobs/") == 3
    job_id = result.stdout.splitlines()[0]
    assert f"submitted {job_id}" in result.stderr
    assert cli("status", job_id).exit_code == 0  # the real head has it, once
    assert cli("jobs").stdout.count(job_id) == 1


@pytest.mark.slow
@pytest.mark.cluster
def test_a_retry_after_a_submission_that_reached_the_cluster_starts_nothing_new(
        cli, ray_head, tmp_path):
    with JobsApi(upstream=ray_head["address"]) as head:
        # The head takes the job, but its answer is lost (a proxy's 502 on the way back).
        head.refuse("POST", "/api/jobs/", [(502, "Bad Gateway", True)])
        result = CliRunner().invoke(app, ["submit", str(quick_spec(tmp_path, "lost")),
                                          "--address", head.url])
        assert result.exit_code == 0, result.output
        assert "is not ready (HTTP 502); waiting for it" in result.stderr
        assert head.count("POST", "/api/jobs/") == 1  # the retry found the job
    job_id = result.stdout.splitlines()[0]
    assert head.count("GET", f"/api/jobs/{job_id}") == 2  # looked up before each try
    assert cli("jobs").stdout.count(job_id) == 1


@pytest.mark.slow
@pytest.mark.cluster
def test_submit_right_after_ray_start_waits_for_the_head(ray_head):
    submit, first = ray_head["early"], ray_head["early_first_line"]  # see the fixture
    assert "is not ready (connection refused); waiting for it" in first, first
    stdout, stderr = submit.communicate(timeout=240)
    assert submit.returncode == 0, first + stderr
    job_id = stdout.splitlines()[0]
    assert f"submitted {job_id}" in stderr
    status = subprocess.run(["inpaint", "status", job_id, "--address", ray_head["address"]],
                            env=ray_head["env"], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"submitted with: inpaint {cluster.versions()['inpaint']}" in status.stdout


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


# Which server a client talks to, and what reaches it: loopback stand-ins for the Jobs API.

@pytest.fixture
def no_address_variables(monkeypatch):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    token = secrets.token_hex(16)
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    return f"Bearer {token}"


def test_an_explicit_address_beats_the_environment_and_only_it_gets_the_token(
        no_address_variables, monkeypatch):
    with JobsApi() as named, JobsApi() as from_ray_address, JobsApi() as from_api_variable:
        monkeypatch.setenv("RAY_ADDRESS", from_ray_address.url)
        monkeypatch.setenv("RAY_API_SERVER_ADDRESS", from_api_variable.url)
        result = CliRunner().invoke(app, ["jobs", "--address", named.url])
        assert result.exit_code == 0, result.output
        assert named.seen and {s.authorization for s in named.seen} == {no_address_variables}
        assert from_ray_address.seen == [] and from_api_variable.seen == []
        # the environment still counts when --address is not given, in the README's order
        assert CliRunner().invoke(app, ["jobs"]).exit_code == 0
        assert from_api_variable.seen and from_ray_address.seen == []
        monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
        assert CliRunner().invoke(app, ["jobs"]).exit_code == 0
        assert from_ray_address.seen
    # an explicit address that is down is the one named, and the environment's is not tried
    with JobsApi() as elsewhere:
        monkeypatch.setenv("RAY_ADDRESS", elsewhere.url)
        (port,) = free_ports(1)
        down = CliRunner().invoke(app, ["status", "x", "--address", f"http://127.0.0.1:{port}"])
        assert down.exit_code == 2
        assert f"cannot reach the Ray Jobs API at http://127.0.0.1:{port}" in down.stderr
        assert elsewhere.seen == []


def test_with_no_address_at_all_the_readme_default_is_tried_and_named(no_address_variables):
    assert cluster.DEFAULT_ADDRESS == "http://127.0.0.1:8265"
    assert "`http://127.0.0.1:8265`" in (ROOT / "README.md").read_text()
    try:
        default = JobsApi(port=8265)
    except OSError:
        pytest.skip("port 8265 is taken on this machine (a local Ray dashboard?)")
    with default:
        result = CliRunner().invoke(app, ["jobs"])
        assert result.exit_code == 0, result.output
        assert default.count("GET", "/api/jobs/") == 1
        assert {s.authorization for s in default.seen} == {no_address_variables}
    down = CliRunner().invoke(app, ["jobs"])
    assert "cannot reach the Ray Jobs API at http://127.0.0.1:8265" in down.stderr


@pytest.mark.parametrize("options", [
    "storage_options:\n  client_kwargs:\n    aws_secret_access_key: hunter2\n",
    "storage_options:\n  config_kwargs:\n    s3:\n      aws_session_token: hunter2\n",
    "storage_options:\n  account_name: a\n  connection_string: hunter2\n",
    "storage_options:\n  headers:\n    Authorization: Bearer hunter2\n",
    "storage_options:\n  layers:\n    - {sas_token: hunter2}\n",
    "storage_options_env:\n  client_secret: AZURE_CLIENT_SECRET\n",
    "storage_options_env:\n  endpoint_url: AWS_SECRET_ACCESS_KEY\n",
])
def test_credentials_in_storage_options_are_refused_before_anything_is_sent(
        no_address_variables, tmp_path, options):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: nested\nimages: s3://a/in\nout: s3://a/out\nmethod: telea\n{options}")
    with JobsApi() as api:
        result = CliRunner().invoke(app, ["submit", str(spec), "--address", api.url])
        assert result.exit_code == 2, result.output
        assert "may not carry credentials" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "hunter2" not in result.output
        assert api.seen == []


def test_submit_gives_up_on_a_cluster_that_stays_not_ready_with_its_own_status(
        no_address_variables):
    args = ["submit", "--images", "s3://a/in", "--out", "s3://a/out", "--method", "telea",
            "--wait-for-cluster", "2"]
    with JobsApi() as api:  # a load balancer whose backend (the head) is not up
        api.refuse("GET", "/api/version", [(503, "no healthy upstream")] * 100)
        result = CliRunner().invoke(app, [*args, "--address", api.url])
        assert result.exit_code == cluster.EXIT_NOT_READY == 4, result.output
        assert "is not ready (HTTP 503); waiting for it" in result.stderr
        assert f"error: the Ray cluster at {api.url} was not ready after 2 s" in result.stderr
        assert api.count("GET", "/api/version") >= 2  # it did try again
        assert api.count("POST", "/api/jobs/") == 0
    (port,) = free_ports(1)  # nothing listening yet: a head whose dashboard is not up
    refused = CliRunner().invoke(app, [*args, "--address", f"http://127.0.0.1:{port}"])
    assert refused.exit_code == 4, refused.output
    assert "not ready (connection refused)" in refused.stderr
    assert "ray dashboard cluster.yaml" in refused.stderr  # still says how to reach one


def test_answers_that_are_not_try_again_later_are_not_retried(no_address_variables):
    with JobsApi() as api:
        api.refuse("GET", "/api/version", [(400, "bad request")])
        result = CliRunner().invoke(app, ["submit", "--images", "a", "--out", "b", "--method",
                                          "telea", "--address", api.url])
        assert result.exit_code == 2, result.output
        assert "the Jobs API at" in result.stderr and "failed" in result.stderr
        assert api.count("GET", "/api/version") == 1


def test_status_shows_the_versions_and_a_client_cluster_mismatch(no_address_variables):
    ours = cluster.versions()
    matching = job_details("same", metadata={"inpaint_version": ours["inpaint"],
                                             "inpaint_ray_version": ours["ray"]})
    older = job_details("older", metadata={"inpaint_version": "0.0.1",
                                           "inpaint_ray_version": "2.58.0"})
    with JobsApi(jobs={"same": matching, "older": older}) as api:
        same = CliRunner().invoke(app, ["status", "same", "--address", api.url])
        assert same.exit_code == 0, same.output
        assert f"submitted with: inpaint {ours['inpaint']}, Ray {ours['ray']}" in same.stdout
        assert f"cluster: Ray {RAY_VERSION}" in same.stdout
        assert "mismatch" not in same.output
        other = CliRunner().invoke(app, ["status", "older", "--address", api.url])
        assert other.exit_code == 0, other.output
        assert ("version mismatch: the job was submitted with Ray 2.58.0, the cluster runs "
                f"Ray {RAY_VERSION}") in other.stderr
        assert f"the job runs inpaint 0.0.1 (the code it was submitted with), this client is " \
               f"inpaint {ours['inpaint']}" in other.stderr


def test_version_prints_the_package_ray_and_torch_versions():
    import ray
    import torch

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"inpaint {cluster.versions()['inpaint']}", f"ray {ray.__version__}",
                         f"torch {torch.__version__}"]
    assert "inpaint --version" in (ROOT / "README.md").read_text()


def test_submissions_carry_the_client_version_in_their_metadata():
    spec = jobspec.parse("name: v\nimages: a\nout: b\n", "s.yaml")
    metadata = cluster.submit_request(spec, "v-1")["metadata"]
    assert metadata["inpaint_version"] == cluster.versions()["inpaint"] != "not installed"
    assert metadata["inpaint_ray_version"] == cluster.versions()["ray"]


@pytest.mark.parametrize(("status", "driver_exit_code", "expected"), [
    ("SUCCEEDED", 0, 0), ("FAILED", 1, 1), ("FAILED", 2, 2), ("STOPPED", None, 3),
    ("FAILED", 5, 5),  # the driver stopped: storage refused writes (runner.RunStopped)
    ("FAILED", 137, 1),
])
def test_submit_wait_exits_with_the_drivers_status(status, driver_exit_code, expected):
    from ray.dashboard.modules.job.pydantic_models import JobDetails

    info = JobDetails(**job_details("job", status=status, driver_exit_code=driver_exit_code))
    assert cluster.exit_code(info) == expected
