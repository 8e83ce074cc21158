"""The `inpaint` command line: a thin Typer layer over the library.

Each command builds `RunSettings` (or its own small settings), calls one library
function, and turns library errors into one line and an exit status: 0 all ok or
skipped, 1 some item failed, 2 a usage or configuration error found before any work,
5 stopped because storage refused writes (full, over quota, read-only, denied); `submit`
also 3 (the job was stopped) and 4 (the cluster was not ready within --wait-for-cluster).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import sys
import time
import typing
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.discover import UsageError
from pipeline.settings import DEFAULT_MAX_PIXELS, DEFAULT_METHOD, RunSettings, describe_errors

app = typer.Typer(
    help="Restore damaged photos at scale: inpainting on Ray, from any fsspec storage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
log = logging.getLogger("pipeline")


EXIT_STORAGE_REFUSED = 5


def fail_usage(message: str, status: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(status)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`--param key=value` pairs; values are read as JSON when they parse, else as text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail_usage(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def parse_storage_options(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        fail_usage(f"--storage-options is not valid JSON: {error.msg}")
    if not isinstance(options, dict):
        fail_usage("--storage-options must be a JSON object")
    return options


def build_settings(**fields: Any) -> RunSettings:
    try:
        return RunSettings(**fields)
    except ValidationError as error:
        fail_usage(describe_errors(error))


class Reporter:
    """A progress bar on a terminal, plain log lines (every 10 s) elsewhere."""

    def __init__(self, total: int, doing: str = "restoring"):
        self.total, self.done, self.failed = total, 0, 0
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if err.is_terminal:
            self.bar = Progress(TextColumn(doing), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                console=err)
            self.task = self.bar.add_task("restore", total=total, rate="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def __call__(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        if self.bar:
            self.bar.update(self.task, completed=self.done, rate=f"{rate:.2f} items/s")
        elif time.monotonic() - self.last_line > 10 or self.done == self.total:
            self.last_line = time.monotonic()
            err.print(f"{self.done}/{self.total} items, {self.failed} failed, {rate:.2f} items/s",
                      highlight=False)


def print_plan(work) -> None:
    out = Console()
    out.print(f"run {work.run_id}: {work.total} items found, {work.todo_count} to restore, "
              f"{work.done_count} already done (resume skips them), "
              f"{work.problem_count} with pairing problems", highlight=False)
    # One plain line per item, streamed from the plan's shards: Rich's print costs 1.5 ms a
    # line (25 minutes for a million items) and wraps paths at the console's width.
    write = sys.stdout.write
    for item in work.todo_items():
        state = (f"PROBLEM {item.problem}" if item.problem else
                 f"mask {item.mask_uri or 'to be detected'}")
        write(f"  todo  {item.image_uri}  {state}\n")
    for item in work.done_items():
        write(f"  done  {item.image_uri}\n")


@app.command("run")
def run_command(
    images: Annotated[str, typer.Argument(help="Folder (recursive) or glob of photos; any "
                                               "fsspec URI.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Where restored photos go.")],
    masks: Annotated[str | None, typer.Option(help="Folder of masks mirroring IMAGES "
                                                   "(x.jpg -> x.<any image ext>).")] = None,
    mask: Annotated[str | None, typer.Option(help="One mask for every image, resized "
                                                  "nearest-neighbour (watermarks).")] = None,
    method: Annotated[str, typer.Option(help="Inpainting method (`inpaint methods`).")] =
        DEFAULT_METHOD,
    param: Annotated[list[str], typer.Option("--param", "-p", help="Method param KEY=VALUE, "
                                                                   "repeatable.")] = [],  # noqa: B006
    workers: Annotated[int, typer.Option(help="Ray actors running the method.")] = 1,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per actor (torch threads).")] =
        1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per actor (0 = CPU).")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Items per Ray task.")] = 4,
    address: Annotated[str | None, typer.Option(help="Ray cluster address; default: start a "
                                                     "local Ray.")] = None,
    force: Annotated[bool, typer.Option(help="Reprocess items the manifest says are done.")] =
        False,
    invert_mask: Annotated[bool, typer.Option(help="Black = fill instead of white.")] = False,
    resize_masks: Annotated[bool, typer.Option(help="Resize masks of another size "
                                                    "(nearest).")] = False,
    output_format: Annotated[str | None, typer.Option("--format", help="png|jpeg|tiff|webp "
                                                      "(default: as the input).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of stochastic methods.")] = 0,
    weights: Annotated[str | None, typer.Option(help="URI of the prior network's "
                                                     "weights.")] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse larger images (decompression "
                                                 "bombs).")] = DEFAULT_MAX_PIXELS,
    manifest: Annotated[str | None, typer.Option(help="Manifest folder (default "
                                                      "OUT/_manifest).")] = None,
    storage_options: Annotated[str | None, typer.Option(help="JSON passed to fsspec, e.g. "
                                                             "'{\"endpoint_url\": ...}'.")] = None,
    limit: Annotated[int | None, typer.Option(help="Process only the first N items.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would be done; process "
                                               "nothing.")] = False,
    report: Annotated[bool, typer.Option(help="Write OUT/_report/index.html at the "
                                              "end.")] = True,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: time + random).")] =
        None,
    hand_masks: Annotated[str | None, typer.Option(help="With --masks auto: hand-made masks "
                                                        "that win over detection.")] = None,
    detector: Annotated[str, typer.Option(help="With --masks auto: damage detector "
                                               "(auto|combined|verified|learned|infrared|"
                                               "tophat; auto: infrared for an RGBI scan, "
                                               "verified "
                                               "for a gray or toned print, else "
                                               "learned).")] = "auto",
    sensitivity: Annotated[float, typer.Option(help="With --masks auto: 0..1, higher flags "
                                                    "more (combined, verified, learned: each 0.1 "
                                                    "halves or "
                                                    "doubles the odds; infrared, tophat: a "
                                                    "linear threshold).")] = 0.5,
    detect_scale: Annotated[float, typer.Option(help="With --masks auto: detect on the photo "
                                                     "shrunk by this factor (0.5 for scans at "
                                                     "twice 300-600 dpi).")] = 1.0,
    detect_margin: Annotated[int, typer.Option(help="With --masks auto: leave the outer N px "
                                                    "of each photo out of detection (scans "
                                                    "cropped tight to the print).")] = 0,
    detect_edge_wear: Annotated[bool, typer.Option(help="With --masks auto: as for `inpaint "
                                                 "detect`.")] = False,
    input_format: Annotated[str, typer.Option(help="auto|files|parquet|webdataset (auto: a "
                                                   "path ending .parquet is Parquet, .tar "
                                                   "WebDataset).")] = "auto",
    image_column: Annotated[str | None, typer.Option(help="Dataset column (WebDataset: "
                                                          "extension) of the photo bytes "
                                                          "(default: image, jpg, ...).")] = None,
    mask_column: Annotated[str | None, typer.Option(help="Dataset column (WebDataset: "
                                                         "extension) of the mask bytes "
                                                         "(default: mask, mask.*).")] = None,
    key_column: Annotated[str | None, typer.Option(help="Parquet column of row keys "
                                                        "(default: key, else the row "
                                                        "number).")] = None,
) -> None:
    """Restore every photo under IMAGES into OUT, recording one manifest row per item.

    IMAGES may also be a dataset: Parquet parts with an image-bytes column, or WebDataset
    tar shards; OUT is then the same kind of dataset.

    Example: inpaint run examples/images --masks examples/masks --out restored/
    """
    from pipeline import runner

    settings = build_settings(
        images=images, out=out, masks=masks, mask=mask, method=method,
        method_params=parse_params(param), workers=workers, cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker, batch_size=batch_size, address=address, force=force,
        invert_mask=invert_mask, resize_masks=resize_masks, output_format=output_format,
        seed=seed, weights=weights, max_pixels=max_pixels, manifest=manifest,
        storage_options=parse_storage_options(storage_options), limit=limit, report=report,
        run_id=run_id, hand_masks=hand_masks, detector=detector, sensitivity=sensitivity,
        detect_scale=detect_scale, detect_margin=detect_margin,
        detect_edge_wear=detect_edge_wear,
        input_format=input_format,
        image_column=image_column,
        mask_column=mask_column, key_column=key_column,
    )
    try:
        if dry_run:  # planned in a temporary folder: nothing is written to OUT
            work = runner.plan(settings, temporary=True)
            try:
                print_plan(work)
            finally:
                work.discard()
            return
        work = runner.plan(settings)
        with Reporter(work.todo_count) as reporter:
            summary = runner.run(settings, progress=reporter, work=work)
    except UsageError as error:
        fail_usage(str(error))
    except runner.RunStopped as error:
        fail_usage(str(error), EXIT_STORAGE_REFUSED)
    except KeyboardInterrupt:
        err.print("interrupted: rows so far are in the manifest; run the same command again "
                  "to resume", highlight=False)
        raise typer.Exit(130) from None
    print_summary(summary)
    raise typer.Exit(1 if summary.failed else 0)


def print_summary(summary) -> None:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items())) or "none"
    Console().print(
        f"run {summary.run_id}: {counts}; {summary.resumed} already done; "
        f"{summary.seconds:.1f}s\nmanifest: {summary.manifest_uri}"
        + (f"\nreport: {summary.report_uri}" if summary.report_uri else ""),
        highlight=False, markup=False, soft_wrap=True,  # paths stay whole in logs
    )


@app.command("detect")
def detect_command(
    images: Annotated[str, typer.Argument(help="Folder (recursive) or glob of scanned photos; "
                                               "any fsspec URI.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Where masks go (same relative "
                                                         "paths, .png, white = damage).")],
    method: Annotated[str, typer.Option(help="Detector: auto (infrared when the scan has an "
                                             "IR channel, verified for a gray or toned "
                                             "print, else learned), combined (verified "
                                             "and a print-trained net together), verified "
                                             "(old prints' cracks, crackle and scratches), "
                                             "learned, infrared, tophat.")] = "auto",
    sensitivity: Annotated[float, typer.Option(help="0..1, higher flags fainter damage "
                                                    "(combined, verified, learned: each 0.1 "
                                                    "halves or "
                                                    "doubles the odds; infrared, tophat: a "
                                                    "linear threshold).")] = 0.5,
    detect_scale: Annotated[float, typer.Option(help="Detect on the photo shrunk by this "
                                                     "factor: 0.5 for scans at twice 300-600 "
                                                     "dpi, where damage is twice as "
                                                     "large.")] = 1.0,
    detect_margin: Annotated[int, typer.Option(help="Leave the outer N px of each photo out "
                                                    "of detection: a scan cropped tight to its "
                                                    "print shows the print's edge and the "
                                                    "scanner's lid there.")] = 0,
    detect_edge_wear: Annotated[bool, typer.Option(help="verified and combined (auto on prints) "
                                                 "flag fainter damage within 5% of the "
                                                 "frame, where prints wear: more of a worn "
                                                 "print's damage, and some picture at the "
                                                 "frame (README).")] = False,
    workers: Annotated[int, typer.Option(help="Ray actors.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Items per Ray task.")] = 4,
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    force: Annotated[bool, typer.Option(help="Redo items the manifest says are done.")] =
        False,
    manifest: Annotated[str | None, typer.Option(help="Manifest folder (default "
                                                      "OUT/_manifest).")] = None,
    storage_options: Annotated[str | None, typer.Option(help="JSON passed to fsspec.")] =
        None,
    limit: Annotated[int | None, typer.Option(help="Process only the first N items.")] = None,
) -> None:
    """Find dust, scratches and hairs: write one damage mask per photo and a manifest.

    Example: inpaint detect scans/ --out masks/ --sensitivity 0.6
    """
    from pipeline import runner

    settings = build_settings(
        images=images, out=out, task="detect", detector=method, sensitivity=sensitivity,
        detect_scale=detect_scale, detect_margin=detect_margin,
        detect_edge_wear=detect_edge_wear,
        method="telea",
        workers=workers, batch_size=batch_size,
        address=address, force=force, manifest=manifest,
        storage_options=parse_storage_options(storage_options), limit=limit, report=False,
    )
    try:
        work = runner.plan(settings)
        with Reporter(work.todo_count, "detecting") as reporter:
            summary = runner.run(settings, progress=reporter, work=work)
    except UsageError as error:
        fail_usage(str(error))
    except runner.RunStopped as error:
        fail_usage(str(error), EXIT_STORAGE_REFUSED)
    print_summary(summary)
    raise typer.Exit(1 if summary.failed else 0)


@app.command("calibrate")
def calibrate_command(
    images: Annotated[str, typer.Argument(help="Folder (recursive) or glob of scanned photos; "
                                               "any fsspec URI.")],
    masks: Annotated[str, typer.Option(help="Hand-made masks of some of them (same relative "
                                            "path, any image extension, white = damage); "
                                            "photos without one are not scored.")],
    method: Annotated[str, typer.Option(help="Detector, as for `inpaint detect`; several, "
                                             "comma-separated, are compared.")] = "auto",
    levels: Annotated[str, typer.Option(help="Sensitivities to try, comma-separated.")] =
        "0.5,0.6,0.7,0.8,0.9,1.0",
    detect_scale: Annotated[float, typer.Option(help="As for `inpaint detect`.")] = 1.0,
    detect_margin: Annotated[int, typer.Option(help="As for `inpaint detect`.")] = 0,
    detect_edge_wear: Annotated[bool, typer.Option(help="As for `inpaint detect`.")] = False,
    compare_edge_wear: Annotated[bool, typer.Option(
        help="Score each detector that takes --detect-edge-wear both without and with it.")] =
        False,
    storage_options: Annotated[str | None, typer.Option(help="JSON passed to fsspec.")] =
        None,
) -> None:
    """Pick the --sensitivity for an archive: score each level's masks against a few photos
    a person has masked, and print the level with the best F1 (with several detectors or
    --compare-edge-wear, the setting as well).

    Example: inpaint calibrate scans/ --masks checked-masks/ --method auto,combined
    --compare-edge-wear
    """
    from pipeline import calibrate

    try:
        tried = [float(level) for level in levels.split(",") if level.strip()]
    except ValueError:
        fail_usage(f"--levels expects numbers separated by commas, got {levels!r}")
    if detect_edge_wear and compare_edge_wear:
        fail_usage("--detect-edge-wear scores with it only and --compare-edge-wear with and "
                   "without it: give one of them")
    detectors = [name.strip() for name in method.split(",") if name.strip()]
    try:
        settings = calibrate.settings_to_compare(detectors, detect_edge_wear, compare_edge_wear)
        results = calibrate.compare(images, masks, settings, tried, detect_scale,
                                    detect_margin, parse_storage_options(storage_options))
    except UsageError as error:
        fail_usage(str(error))
    print_calibration(results)


def print_calibration(results) -> None:
    """Each setting's levels, then the setting and level to use (the options to pass on)."""
    from pipeline.calibrate import best_of

    out = Console()
    for relative, reason in results[0].skipped:
        err.print(f"left out {relative}: {reason}", highlight=False, markup=False,
                  soft_wrap=True)
    best = best_of(results)
    for result in results:
        ran = "" if result.ran == [result.detector] else f" (ran {', '.join(result.ran)})"
        wear = " with --detect-edge-wear" if result.edge_wear else ""
        out.print(f"{result.detector}{ran}{wear} on {len(result.photos)} masked photo(s), "
                  f"{result.best.marked_pixels} marked pixels:", highlight=False, markup=False,
                  soft_wrap=True)
        out.print("sensitivity  precision  recall    F1  flagged", highlight=False,
                  markup=False)
        for score in result.levels:
            pick = "  <- best" if result is best and score is result.best else ""
            out.print(f"{score.sensitivity:11.2f}  {score.precision:9.2f}  "
                      f"{score.recall:6.2f}  {score.f1:4.2f}  {score.flagged:7.2%}{pick}",
                      highlight=False, markup=False)
    use = f"use: --sensitivity {best.best.sensitivity!r}"
    if best.edge_wear:
        use += " --detect-edge-wear"
    if len({result.detector for result in results}) > 1:
        use += (f", detector {best.detector} (`inpaint run --detector {best.detector}`, "
                f"`inpaint detect --method {best.detector}`)")
    out.print(use, highlight=False, markup=False, soft_wrap=True)
    if best.best is best.levels[-1] and best.best.sensitivity < 1:
        out.print("(the highest level tried: higher ones may do better; add them to --levels)",
                  highlight=False, markup=False)


@app.command("methods")
def methods_command() -> None:
    """List the inpainting methods and their params.

    Example: inpaint methods
    """
    from pipeline.methods import method_class, method_names

    out = Console()
    for name in method_names():
        fields = method_class(name).Params.model_fields
        params = ", ".join(f"{k}={v.default!r}" for k, v in fields.items()) or "no params"
        out.print(f"{name}: {params}", highlight=False, markup=False)


@app.command("report")
def report_command(
    manifest_uri: Annotated[str, typer.Argument(help="Manifest folder (OUT/_manifest); any "
                                                     "fsspec URI.")],
    out: Annotated[str | None, typer.Option(help="Report folder (default: the manifest's "
                                                 "sibling _report).")] = None,
    sample: Annotated[int, typer.Option(min=0, help="Items in the gallery.")] = 48,
    run: Annotated[str | None, typer.Option("--run", help="Run to report (default: the "
                                                          "latest).")] = None,
    storage_options: Annotated[str | None, typer.Option(help="JSON passed to fsspec.")] = None,
) -> None:
    """Write a static HTML report (summary, charts, gallery, failures) of one run.

    Example: inpaint report restored/_manifest --out restored/_report --sample 24
    """
    from pipeline import report, storage
    from pipeline.settings import unknown_scheme

    for uri in (manifest_uri, out):
        if uri and unknown_scheme(uri):
            fail_usage(unknown_scheme(uri))
    try:
        index = report.build(manifest_uri, out or report.default_out(manifest_uri), run_id=run,
                             storage_options=parse_storage_options(storage_options),
                             sample=sample)
    except report.ReportError as error:
        fail_usage(str(error))
    except storage.WriteRefused as error:
        fail_usage(f"the report could not be written: {error}", EXIT_STORAGE_REFUSED)
    Console().print(f"report: {index}", highlight=False, markup=False, soft_wrap=True)


@app.command("review")
def review_command(
    out: Annotated[str, typer.Argument(help="OUT of an `inpaint run --masks auto`.")],
    hand_masks: Annotated[str, typer.Option(help="Where corrected masks are saved (same "
                                                 "relative paths, .png, white = fill).")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: any "
                                                             "free one).")] = 0,
    manifest: Annotated[str | None, typer.Option(help="Manifest folder (default "
                                                      "OUT/_manifest).")] = None,
    storage_options: Annotated[str | None, typer.Option(help="JSON passed to fsspec.")] = None,
) -> None:
    """Check and correct detected masks in the browser; rerun to restore what you saved.

    Example: inpaint review restored/ --hand-masks checked/   (then: inpaint run scans/
    --out restored/ --masks auto --hand-masks checked/)
    """
    from pipeline import review

    try:
        server = review.serve(out, hand_masks, port, manifest,
                              parse_storage_options(storage_options))
    except (review.ReviewError, OSError) as error:
        fail_usage(str(error))
    Console().print(f"review {len(server.review.entries)} photos at {server.url}\n"
                    "(this machine only; Ctrl-C stops)", highlight=False, markup=False,
                    soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# Cluster jobs. `submit` takes `run`'s options, declared once in run_command: the signature
# below copies them, each made optional (None = not given, keep the spec's value).
def _run_options_as_optional() -> list[inspect.Parameter]:
    settings = set(RunSettings.model_fields) - {"address"}  # submit's --address: the Jobs API
    params = []
    for name, param in inspect.signature(run_command, eval_str=True).parameters.items():
        if name not in settings | {"param", "storage_options"}:
            continue
        kind, info = typing.get_args(param.annotation)
        if isinstance(info, typer.models.ArgumentInfo):  # run's IMAGES argument
            info = typer.Option(f"--{name}", help=info.help)
        params.append(param.replace(annotation=Annotated[kind | None, info], default=None))
    return params


def given_run_fields(options: dict[str, Any]) -> dict[str, Any]:
    """`run` options given on the command line, as RunSettings fields."""
    fields = {name: value for name, value in options.items() if value not in (None, [], ())}
    if "param" in fields:
        fields["method_params"] = parse_params(fields.pop("param"))
    if "storage_options" in fields:
        fields["storage_options"] = parse_storage_options(fields["storage_options"])
    return fields


AddressOption = Annotated[str | None, typer.Option(
    "--address", help="Jobs API of the cluster, e.g. http://127.0.0.1:8265 through `ray "
                      "dashboard cluster.yaml` (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS, "
                      "http://127.0.0.1:8265). Token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                      "~/.ray/auth_token.")]
JobArgument = Annotated[str, typer.Argument(help="Job (submission) id, as `inpaint jobs` "
                                                 "lists it.")]


def _note(text: str) -> None:
    err.print(text, highlight=False, markup=False, soft_wrap=True)


def _cluster(address: str | None):
    from pipeline.cluster import Cluster

    return Cluster(address)


def submit_command(**options: Any) -> None:
    """Submit a restore to a Ray cluster as a Ray job, and print the job id.

    SPEC is a YAML job spec (jobs/*.yaml); the options of `inpaint run` given here replace
    its values. A spec with a `schedule` gets the submission id NAME-SLOT, so a retried cron
    submission starts nothing new and reports the job it started before. --wait follows the
    logs, then exits 0 if the job succeeded, 1 if items failed, 2 on a configuration error,
    3 if it was stopped. A cluster that answers "try again later" (a head still starting) is
    retried for --wait-for-cluster seconds, then the exit status is 4.

    Example: inpaint submit jobs/restore-archive.yaml --address http://127.0.0.1:8265 --wait
    """
    from pipeline import jobspec
    from pipeline.cluster import EXIT_NOT_READY, Cluster, ClusterNotReady, Patience, resolve_address

    spec_path, address = options.pop("spec"), options.pop("address")
    wait, submission_id = options.pop("wait"), options.pop("submission_id")
    wait_for_cluster = options.pop("wait_for_cluster")
    try:
        overrides = given_run_fields(options)
        spec = (jobspec.load(spec_path, overrides) if spec_path
                else jobspec.parse("", "command line", overrides))
        patience = Patience(wait_for_cluster, resolve_address(address), _note)
        target = Cluster(address, patience)
        submitted = target.submit(spec, submission_id)
        if submitted.created:
            _note(f"submitted {submitted.job_id}; follow it with `inpaint logs "
                  f"{submitted.job_id} --follow`")
        else:
            _note(f"{submitted.job_id} was submitted before ({submitted.status}); nothing "
                  "new started")
        typer.echo(submitted.job_id)
        if wait:
            _follow_to_exit(target, submitted.job_id)
    except UsageError as error:
        fail_usage(str(error))
    except ClusterNotReady as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_NOT_READY) from None


submit_command.__signature__ = inspect.Signature([
    inspect.Parameter("spec", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                      annotation=Annotated[str | None, typer.Argument(
                          help="YAML job spec (jobs/restore-archive.yaml); optional when "
                               "--images and --out are given.")]),
    *_run_options_as_optional(),
    inspect.Parameter("address", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=AddressOption),
    inspect.Parameter("wait", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, typer.Option(
                          help="Follow the logs; exit with the job's outcome.")]),
    inspect.Parameter("submission_id", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[str | None, typer.Option(
                          help="Job id to use (default: NAME-SLOT for a scheduled spec, "
                               "else NAME-TIME-RANDOM); an id used before starts nothing.")]),
    inspect.Parameter("wait_for_cluster", inspect.Parameter.KEYWORD_ONLY, default=60.0,
                      annotation=Annotated[float, typer.Option(
                          min=0, metavar="SECONDS",
                          help="How long to retry a cluster that answers 'try again later' "
                               "(starting head: no job agent yet, 502/503/504, connection "
                               "refused); then exit 4.")]),
])
app.command("submit")(submit_command)


def _follow_to_exit(target, job_id: str) -> None:
    from pipeline.cluster import exit_code

    try:
        info = target.follow(job_id, write=lambda text: print(text, end="", flush=True))
    except KeyboardInterrupt:
        _note(f"stopped following; the job goes on (`inpaint stop {job_id}` stops it)")
        raise typer.Exit(130) from None
    _note(f"job {job_id}: {info.status}: {_first_line(info.message)}")
    raise typer.Exit(exit_code(info))


def _first_line(message: str | None) -> str:
    """Ray's job message, less the copy of the logs it appends on failure."""
    return (message or "-").splitlines()[0].removesuffix(":")


def _when(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("status")
def status_command(job: JobArgument, address: AddressOption = None) -> None:
    """Show a cluster job's status, start and end times, and Ray's message.

    Example: inpaint status restore-archive-20261125T0300Z --address http://127.0.0.1:8265
    """
    from pipeline.cluster import version_mismatches

    try:
        target = _cluster(address)
        info = target.info(job)
    except UsageError as error:
        fail_usage(str(error))
    metadata = info.metadata or {}
    submitted_with = (f"inpaint {metadata['inpaint_version']}, Ray "
                      f"{metadata.get('inpaint_ray_version', '?')}"
                      if "inpaint_version" in metadata else "unknown (no inpaint_version in "
                      "the job's metadata)")
    Console().print(f"{job}: {info.status}\nstarted: {_when(info.start_time)} UTC\n"
                    f"ended: {_when(info.end_time)} UTC\nmessage: {_first_line(info.message)}\n"
                    f"submitted with: {submitted_with}\n"
                    f"cluster: Ray {target.ray_version or 'unknown'}",
                    highlight=False, markup=False)
    for problem in version_mismatches(metadata, target.ray_version):
        _note(f"version mismatch: {problem}")


@app.command("logs")
def logs_command(
    job: JobArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the job ends; "
                                                                "exit with its outcome.")] =
        False,
    address: AddressOption = None,
) -> None:
    """Print a cluster job's logs (its driver's output).

    Example: inpaint logs restore-archive-20261125T0300Z --follow
    """
    try:
        target = _cluster(address)
        if follow:
            _follow_to_exit(target, job)
        print(target.logs(job), end="")
    except UsageError as error:
        fail_usage(str(error))


@app.command("stop")
def stop_command(job: JobArgument, address: AddressOption = None) -> None:
    """Stop a running cluster job (its actors and their tasks end with it).

    Example: inpaint stop restore-archive-20261125T0300Z --address http://127.0.0.1:8265
    """
    try:
        target = _cluster(address)
        if target.stop(job):
            _note(f"stop requested for {job}")
        else:
            _note(f"{job} had already ended ({target.info(job).status})")
    except UsageError as error:
        fail_usage(str(error))


@app.command("jobs")
def jobs_command(
    address: AddressOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most N, newest first.")] = 20,
) -> None:
    """List the cluster's submitted jobs: id, spec, status, start and end (UTC).

    Example: inpaint jobs --address http://127.0.0.1:8265
    """
    from rich.table import Table

    try:
        jobs = _cluster(address).jobs()[:limit]
    except UsageError as error:
        fail_usage(str(error))
    table = Table("job", "spec", "status", "started (UTC)", "ended (UTC)", "message",
                  box=None, highlight=False)
    for job in jobs:
        table.add_row(job.submission_id, (job.metadata or {}).get("inpaint_spec", "-"),
                      str(job.status), _when(job.start_time), _when(job.end_time),
                      _first_line(job.message)[:60])
    out = Console()
    if not out.is_terminal:  # whole ids in pipes and logs, where rich would assume 80 columns
        out = Console(width=200)
    out.print(table)


def _print_version(value: bool) -> None:
    if value:
        from pipeline.cluster import versions

        found = versions()
        with contextlib.suppress(ImportError):  # its own string names the build: +cu130, +cpu
            import torch

            found["torch"] = torch.__version__
        typer.echo(f"inpaint {found['inpaint']}\nray {found['ray']}\ntorch {found['torch']}\n"
                   f"python {sys.version.split()[0]}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the versions of inpaint, Ray, torch "
                                               "and Python, and exit.")] = False,
) -> None:
    """Restore damaged photos at scale: inpainting on Ray, from any fsspec storage."""


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app()
