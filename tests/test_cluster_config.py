"""cluster.yaml passes Ray's own cluster-config validation (no cloud call) and keeps the
promises the README makes: CPU head with no inpainting, GPU workers from zero, loopback
dashboard, token auth on every node, the project installed everywhere."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parent.parent / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    prepared = prepare_config(yaml.safe_load(CONFIG.read_text()))  # merges Ray's AWS defaults
    validate_config(prepared)  # Ray's JSON schema plus its own checks; raises if invalid
    return prepared


def test_ray_rejects_what_it_does_not_know():
    broken = yaml.safe_load(CONFIG.read_text())
    broken["available_node_types"]["gpu_worker"]["gpus"] = 1  # not a Ray key
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_head_runs_no_inpainting_and_gpu_workers_scale_from_zero(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    workers = {name: node for name, node in config["available_node_types"].items()
               if name != config["head_node_type"]}
    assert list(workers) == ["gpu_worker"]
    gpu = workers["gpu_worker"]
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge"
    assert gpu["min_workers"] == 0 and 0 < gpu["max_workers"] <= config["max_workers"]


def test_dashboard_on_loopback_and_token_auth_on_every_node(config):
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in CONFIG.read_text()
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "export RAY_AUTH_MODE=token;" in [c for c in commands if "ray start" in c][0]
    assert "~/.ray/auth_token" in config["file_mounts"].values()


def test_every_node_installs_the_project_in_a_matching_ray_image(config):
    import ray

    for commands in (config["head_setup_commands"], config["worker_setup_commands"]):
        assert "pip install --quiet -e /home/ray/inpaint" in commands
    assert config["file_mounts"]["/home/ray/inpaint"] == "."
    assert config["docker"]["worker_image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert config["docker"]["head_image"] == f"rayproject/ray:{ray.__version__}-py311-cpu"


def deploy_documents(name: str) -> dict[str, dict]:
    path = CONFIG.parent / "deploy" / name
    return {document["kind"]: document for document in yaml.safe_load_all(path.read_text())}


def test_kuberay_rayjob_runs_a_valid_spec_with_a_loopback_dashboard_and_token_auth():
    from pipeline import jobspec

    documents = deploy_documents("kuberay-rayjob.yaml")
    specs = documents["ConfigMap"]["data"]
    job = documents["RayJob"]["spec"]
    spec_file = job["entrypoint"].removeprefix("python -m jobs.restore --spec /specs/")
    spec = jobspec.parse(specs[spec_file], spec_file)  # the same validation as `submit`
    assert spec.gpus_per_worker == 1
    assert job["submissionMode"] == "SidecarMode"
    cluster = job["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0",
                                                           "dashboard-host": "127.0.0.1"}
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] > 0
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_cronjob_submits_the_shipped_spec_on_its_schedule_with_the_token_from_a_secret():
    import typer

    from pipeline import jobspec
    from pipeline.cli import app

    documents = deploy_documents("cronjob.yaml")
    cron = documents["CronJob"]["spec"]
    (container,) = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    program, command, spec_path, *options = container["command"]
    assert (program, command) == ("inpaint", "submit")
    shipped = jobspec.load(CONFIG.parent / "jobs" / Path(spec_path).name)
    assert cron["schedule"] == shipped.schedule  # one submission id per night
    assert cron["concurrencyPolicy"] == "Forbid"
    submit = typer.main.get_command(app).commands["submit"]
    parsed = submit.make_context("submit", [spec_path, *options]).params  # real option names
    assert parsed["wait"] and parsed["gpus_per_worker"] == 1
    assert [env["name"] for env in container["env"]] == ["RAY_AUTH_TOKEN"]
    assert "secretKeyRef" in container["env"][0]["valueFrom"]


def test_networkpolicy_lets_submitters_reach_the_jobs_api_and_ray_pods_only_ray_ports():
    documents = deploy_documents("cronjob.yaml")
    policy, head = documents["NetworkPolicy"]["spec"], documents["RayCluster"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"ray.io/cluster": "inpaint",
                                                    "ray.io/node-type": "head"}
    assert documents["RayCluster"]["metadata"]["name"] == "inpaint"
    assert head["authOptions"] == {"mode": "token"}
    assert policy["policyTypes"] == ["Ingress"]

    def reachable(rule) -> set[int]:
        ports = set()
        for entry in rule["ports"]:  # a rule without ports would open every port
            assert entry["protocol"] == "TCP"
            ports |= set(range(entry["port"], entry.get("endPort", entry["port"]) + 1))
        return ports

    rules = {tuple(sorted(rule["from"][0]["podSelector"]["matchLabels"].items())): rule
             for rule in policy["ingress"]}
    assert all(len(rule["from"]) == 1 for rule in policy["ingress"])
    submitters = rules.pop((("app", "inpaint-submit"),))
    assert reachable(submitters) == {8265}
    cron = documents["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]
    assert cron["metadata"]["labels"] == {"app": "inpaint-submit"}  # the pods the rule names
    (ray_pods,) = rules.values()
    assert ray_pods["from"][0]["podSelector"]["matchLabels"] == {"ray.io/cluster": "inpaint"}
    # What Ray's own pods need of the head, fixed on the head so the policy can name it:
    params = head["headGroupSpec"]["rayStartParams"]
    needed = {int(params.get("port", 6379)), int(params["node-manager-port"]),
              int(params["object-manager-port"]),
              *range(int(params["min-worker-port"]), int(params["max-worker-port"]) + 1)}
    assert reachable(ray_pods) == needed
    assert 8265 not in reachable(ray_pods) and 10001 not in reachable(ray_pods)  # nor ray://
    assert params["dashboard-host"] == "0.0.0.0"  # what the policy is there to guard
    readme = (CONFIG.parent / "README.md").read_text()
    assert "lets only the submitter pods reach port 8265" in readme
    for port in ("6379", "6380", "6381", "10002-10199"):
        assert port in readme
