"""Job specs: typed validation with field names and lines, env-referenced storage options,
schedule slots, the shipped example specs, and the job entrypoint's handling of bad specs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs import restore
from pipeline import jobspec
from pipeline.jobspec import JobSpec, SpecError
from pipeline.methods import method_names

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SPECS = sorted((ROOT / "jobs").glob("*.yaml"))


def errors_of(text: str, overrides: dict | None = None) -> list[str]:
    with pytest.raises(SpecError) as caught:
        jobspec.parse(text, "spec.yaml", overrides)
    return str(caught.value).splitlines()


def test_every_error_names_its_field_and_line_in_line_order():
    text = ("name: nightly\n"
            "images: scans/\n"
            "out: restored/\n"
            "workers: 0\n"
            "colour: sepia\n"
            "method_params:\n"
            "  radius: 3\n"
            "schedule: every night\n")
    assert errors_of(text) == [
        "spec.yaml:4: workers: Input should be greater than or equal to 1",
        "spec.yaml:5: colour: unknown key (see `inpaint submit --help` for the settings a "
        "spec takes)",
        "spec.yaml:8: schedule: not a cron expression: 'every night' (e.g. '0 3 * * *')",
    ]


def test_missing_fields_bad_names_and_duplicates_are_reported():
    assert errors_of("name: Nightly Run\n") == [
        "spec.yaml:1: images: Field required",
        "spec.yaml:1: out: Field required",
        "spec.yaml:1: name: must be 1-48 lowercase letters, digits or '-', starting with a "
        "letter or digit",
    ]
    assert errors_of("images: a\nout: b\nworkers: 2\nworkers: 3\n") == [
        "spec.yaml:4: workers: duplicate key"]


def test_yaml_syntax_errors_and_non_mappings_have_a_line():
    assert errors_of("images: a\nout: [b\n")[0].startswith("spec.yaml:3: not valid YAML")
    assert errors_of("- images\n- out\n") == [
        "spec.yaml:1: a job spec is a mapping of settings (key: value)"]


def test_command_line_overrides_replace_the_file_and_are_blamed_by_option():
    spec = jobspec.parse("images: a\nout: b\nmethod: telea\n", "spec.yaml", {"out": "s3://x/y"})
    assert (spec.out, spec.method) == ("s3://x/y", "telea")
    assert errors_of("images: a\nout: b\n", {"workers": 0}) == [
        "command line: --workers: Input should be greater than or equal to 1"]


def test_a_spec_names_no_cluster_address():
    assert errors_of("images: a\nout: b\naddress: ray://10.0.0.1:10001\n") == [
        "spec.yaml:3: address: a job runs on the cluster it is submitted to; name the cluster "
        "with `inpaint submit --address`"]


def test_storage_options_come_from_the_environment_where_the_job_runs():
    spec = jobspec.parse("images: s3://a/in\nout: s3://a/out\nstorage_options:\n"
                         "  anon: false\nstorage_options_env:\n"
                         "  endpoint_url: AWS_ENDPOINT_URL\n", "spec.yaml")
    settings = spec.run_settings({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert settings.storage_options == {"anon": False, "endpoint_url": "http://127.0.0.1:9000"}
    assert settings.address == "auto"  # the cluster the job runs on
    with pytest.raises(SpecError, match="AWS_ENDPOINT_URL not set where the job runs"):
        spec.run_settings({})


def test_no_secret_rides_in_a_spec_even_by_reference():
    assert errors_of("images: a\nout: b\nstorage_options:\n  secret: hunter2\n")[0].startswith(
        "spec.yaml:3: storage_options: storage options may not carry credentials (secret)")
    assert errors_of("images: a\nout: b\nstorage_options_env:\n  key: AWS_ACCESS_KEY_ID\n")[
        0].startswith("spec.yaml:3: storage_options_env: storage options may not carry "
                      "credentials (key)")
    assert "environment variable names" in errors_of(
        "images: a\nout: b\nstorage_options_env:\n  endpoint_url: http://x\n")[0]


@pytest.mark.parametrize(
    ("schedule", "now", "slot"),
    [("0 3 * * *", datetime(2026, 11, 25, 3, 0, 0, tzinfo=UTC), "2026-11-25 03:00"),
     ("0 3 * * *", datetime(2026, 11, 25, 2, 59, 59, tzinfo=UTC), "2026-11-24 03:00"),
     ("*/15 * * * *", datetime(2026, 11, 25, 14, 44, 10, tzinfo=UTC), "2026-11-25 14:30"),
     ("0 0 * * 1", datetime(2026, 11, 25, 12, 0, tzinfo=UTC), "2026-11-23 00:00")],
)
def test_schedule_slot_is_the_latest_tick_at_or_before_now(schedule, now, slot):
    spec = JobSpec(images="a", out="b", schedule=schedule)
    assert f"{spec.schedule_slot(now):%Y-%m-%d %H:%M}" == slot


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_example_specs_validate_and_point_at_the_bundled_examples(path):
    spec = jobspec.load(path)
    assert spec.name == path.stem
    assert (ROOT / spec.images).is_dir() and (ROOT / spec.masks).is_dir()
    assert spec.gpus_per_worker == 0  # runs as shipped on a CPU-only cluster
    assert spec.method in [*method_names(), "hallucinate"]  # the default, being built
    assert spec.run_settings({}).images == spec.images


def test_entrypoint_takes_the_spec_as_inpaint_submit_sends_it():
    spec = jobspec.parse("name: x\nimages: a\nout: b\nmethod: telea\nworkers: 2\n", "s.yaml")
    sent = spec.model_dump_json(exclude_defaults=True)
    received = restore.load_spec(restore.parse_args(["--spec-json", sent, "--out", "s3://o"]))
    assert received == spec.model_copy(update={"out": "s3://o"})


def test_entrypoint_exits_2_with_the_reason_on_a_bad_spec(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("images: a\nout: b\nbatch_size: many\n")
    assert restore.main(["--spec", str(spec)]) == 2
    assert f"{spec}:3: batch_size: Input should be a valid integer" in capsys.readouterr().err
    assert restore.main(["--spec-json", "{not json"]) == 2
    assert "--spec-json is not valid JSON" in capsys.readouterr().err


def test_entrypoint_exits_2_when_the_inputs_are_missing(tmp_path, capsys):
    spec = tmp_path / "missing.yaml"
    spec.write_text(f"images: {tmp_path}/nowhere\nout: {tmp_path}/out\nmethod: telea\n")
    assert restore.main(["--spec", str(spec)]) == 2
    assert "IMAGES not found" in capsys.readouterr().err


def test_methods_and_their_params_are_checked_before_anything_is_submitted():
    assert errors_of("images: a\nout: b\nmethod: nope\n")[0].startswith(
        "spec.yaml:3: method: unknown method 'nope'; choose from ")
    assert errors_of("images: a\nout: b\nmethod: telea\nmethod_params:\n  radius: -1\n") == [
        "spec.yaml:5: method_params.radius: Input should be greater than 0"]
    assert errors_of("images: a\nout: b\n", {"method": "nope"})[0].startswith(
        "command line: method: unknown method 'nope'")


def test_credentials_nested_at_any_depth_are_refused_by_their_path():
    nested = ("images: a\nout: b\nstorage_options:\n  endpoint_url: http://x\n"
              "  client_kwargs:\n    region_name: eu\n    aws_secret_access_key: hunter2\n"
              "  config_kwargs:\n    s3: {addressing_style: path}\n")
    (error,) = errors_of(nested)
    assert error.startswith("spec.yaml:3: storage_options: storage options may not carry "
                            "credentials (client_kwargs.aws_secret_access_key)")
    assert "hunter2" not in error
    for options in ({"account_key": "x"}, {"sas_token": "x"}, {"connection_string": "x"},
                    {"token": "x"}, {"password": "x"}, {"headers": {"Authorization": "x"}},
                    {"a": [{"b": {"client_secret": "x"}}]}):
        with pytest.raises(ValidationError, match="may not carry credentials"):
            JobSpec(images="a", out="b", storage_options=options)
    fine = JobSpec(images="a", out="b", storage_options={
        "endpoint_url": "http://x", "anon": False, "client_kwargs": {"region_name": "eu"}})
    assert fine.storage_options["client_kwargs"] == {"region_name": "eu"}


def test_a_reference_to_a_secret_variable_is_refused_too():
    assert errors_of("images: a\nout: b\nstorage_options_env:\n"
                     "  endpoint_url: AWS_SECRET_ACCESS_KEY\n")[0].startswith(
        "spec.yaml:3: storage_options_env: storage options may not carry credentials "
        "(endpoint_url from AWS_SECRET_ACCESS_KEY)")


def test_a_missing_spec_file_and_an_unknown_scheme_are_one_line_errors(tmp_path):
    with pytest.raises(SpecError) as missing:
        jobspec.load(tmp_path / "missing.yaml")
    assert str(missing.value) == (f"{tmp_path / 'missing.yaml'}: cannot read the job spec: "
                                  "No such file or directory")
    assert errors_of("images: a\nout: nosuch://bucket/out\n") == [
        "spec.yaml:2: out: unknown URI scheme 'nosuch' in 'nosuch://bucket/out' (fsspec knows "
        "file, s3, gs, az, http, memory, ...)"]
    assert jobspec.parse("images: simplecache::s3://a/in\nout: b\n", "s.yaml").images


def test_a_scheme_registered_as_a_class_is_known():
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    class Registered(LocalFileSystem):
        protocol = "inpaint-registered"

    fsspec.register_implementation("inpaint-registered", Registered, clobber=True)
    spec = jobspec.parse("images: inpaint-registered://a\nout: b\n", "s.yaml")
    assert spec.images == "inpaint-registered://a"
