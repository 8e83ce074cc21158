"""The `inpaint` command through Typer's runner, on a real local Ray."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as pads
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import save_mask, small_photo

cli = CliRunner()


def inpaint(*args: str):
    return cli.invoke(app, [str(a) for a in args])


def run_args(archive, *extra):
    return ["run", archive["images"], "--masks", archive["masks"], "--out", archive["out"],
            "--method", "telea", "--no-report", *extra]


def manifest_rows(archive) -> list[dict]:
    return pads.dataset(str(archive["out"] / "_manifest")).to_table().to_pylist()


@pytest.mark.slow
def test_run_restores_every_item_and_records_it(archive, local_ray):
    result = inpaint(*run_args(archive, "--workers", "2", "--batch-size", "1"))
    assert result.exit_code == 0, result.output
    rows = manifest_rows(archive)
    assert sorted(r["relative_path"] for r in rows) == ["a/b/coffee.png", "a/chelsea.jpg",
                                                        "rocket.png"]
    assert {r["status"] for r in rows} == {"ok"}
    assert len({r["run_id"] for r in rows}) == 1
    for relative in ("a/b/coffee.png", "a/chelsea.jpg", "rocket.png"):
        assert (archive["out"] / relative).is_file()


@pytest.mark.slow
def test_a_failed_item_gives_exit_status_1_and_the_rest_run(archive, local_ray):
    (archive["masks"] / "rocket.png").unlink()
    result = inpaint(*run_args(archive))
    assert result.exit_code == 1
    statuses = {r["relative_path"]: r["status"] for r in manifest_rows(archive)}
    assert statuses == {"a/b/coffee.png": "ok", "a/chelsea.jpg": "ok", "rocket.png": "failed"}


@pytest.mark.slow
def test_empty_mask_is_skipped_with_exit_status_0(archive, local_ray):
    photo = small_photo("rocket")
    save_mask(np.zeros(photo.shape[:2], bool), archive["masks"] / "rocket.png")
    assert inpaint(*run_args(archive)).exit_code == 0
    statuses = {r["relative_path"]: r["status"] for r in manifest_rows(archive)}
    assert statuses["rocket.png"] == "skipped"


@pytest.mark.slow
def test_resume_does_no_work_and_force_redoes_it(archive, local_ray):
    assert inpaint(*run_args(archive)).exit_code == 0
    output = archive["out"] / "rocket.png"
    first_mtime = output.stat().st_mtime_ns
    second = inpaint(*run_args(archive))
    assert second.exit_code == 0
    assert "3 already done" in second.output
    assert len(manifest_rows(archive)) == 3
    assert output.stat().st_mtime_ns == first_mtime
    forced = inpaint(*run_args(archive, "--force"))
    assert forced.exit_code == 0
    rows = manifest_rows(archive)
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 2


@pytest.mark.slow
def test_changed_params_are_not_resumed(archive, local_ray):
    assert inpaint(*run_args(archive)).exit_code == 0
    assert inpaint(*run_args(archive, "--param", "radius=3")).exit_code == 0
    assert len(manifest_rows(archive)) == 6


@pytest.mark.slow
def test_one_mask_for_all_images(archive, tmp_path, local_ray):
    hole = np.zeros((40, 40), bool)
    hole[5:10, 5:30] = True
    watermark = save_mask(hole, tmp_path / "watermark.png")
    result = inpaint("run", archive["images"], "--mask", watermark, "--out", archive["out"],
                     "--method", "telea", "--no-report")
    assert result.exit_code == 0, result.output
    assert {r["status"] for r in manifest_rows(archive)} == {"ok"}


def test_dry_run_lists_and_processes_nothing(archive):
    (archive["masks"] / "rocket.png").unlink()
    result = inpaint(*run_args(archive, "--dry-run"))
    assert result.exit_code == 0
    assert "3 items found, 3 to restore" in result.output
    assert "no mask found for rocket.png" in result.output
    assert not archive["out"].exists()


@pytest.mark.slow
def test_limit_processes_only_the_first_items(archive, local_ray):
    assert inpaint(*run_args(archive, "--limit", "2")).exit_code == 0
    assert len(manifest_rows(archive)) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--out", "IMAGES/restored"], "inside IMAGES"),
        (["--method", "no-such-method"], "unknown method"),
        (["--param", "radius=-1"], "invalid params"),
        (["--param", "oops"], "KEY=VALUE"),
        (["--format", "gif"], "output_format"),
        (["--storage-options", "{not json"], "not valid JSON"),
        (["--storage-options", '{"secret": "x"}'], "may not carry credentials"),
        (["--storage-options", '{"client_kwargs": {"aws_secret_access_key": "x"}}'],
         "may not carry credentials (client_kwargs.aws_secret_access_key)"),
        (["--param", "nosuch=1"], "invalid params for method 'telea': nosuch: unknown param"),
        (["--out", "nosuch://x"], "unknown URI scheme 'nosuch'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(archive, change, message):
    args = run_args(archive)
    change = [c.replace("IMAGES/", f"{archive['images']}/") for c in change]
    if change[0] in args:
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += change
    result = inpaint(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (archive["out"] / "_manifest").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch://x", "--out", "OUT", "--mask", "m.png"],
         "error: images: unknown URI scheme 'nosuch' in 'nosuch://x'"),
        (["detect", "nosuch://x", "--out", "OUT"], "unknown URI scheme 'nosuch'"),
        (["report", "nosuch://x/_manifest"], "unknown URI scheme 'nosuch'"),
        (["submit", "missing.yaml"],
         "error: missing.yaml: cannot read the job spec: No such file or directory"),
        (["submit", "--images", "nosuch://x", "--out", "OUT", "--method", "telea"],
         "command line: --images: unknown URI scheme 'nosuch'"),
        (["submit", "--images", "a", "--out", "OUT", "--method", "telea", "-p", "nosuch=1"],
         "command line: method_params.nosuch: unknown param"),
    ],
)
def test_usage_errors_of_every_command_are_one_line_and_exit_2(tmp_path, monkeypatch, args,
                                                                message):
    monkeypatch.chdir(tmp_path)  # missing.yaml is missing here
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")  # never reached: found before
    result = inpaint(*[str(tmp_path / "out") if a == "OUT" else a for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()]  # one line
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_images_is_a_usage_error(tmp_path):
    result = inpaint("run", tmp_path / "nothing", "--out", tmp_path / "out", "--mask", "x.png")
    assert result.exit_code == 2


def test_every_command_has_help_with_an_example():
    from typer.main import get_command

    for name, command in get_command(app).commands.items():
        result = inpaint(name, "--help")
        assert result.exit_code == 0, name
        assert "Example" in (command.help or ""), f"{name} help has no example"


def test_submit_takes_every_option_of_run_but_dry_run():
    # What the README says of `inpaint submit`.
    import typer

    commands = typer.main.get_command(app).commands
    options = {name: {p.name for p in commands[name].params if p.param_type_name == "option"}
               for name in ("run", "submit")}
    assert options["run"] - options["submit"] == {"dry_run"}
