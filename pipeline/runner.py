"""`pipeline.run`: discover -> skip what resume allows -> restore on Ray -> record.

The driver never touches pixels: it lists, plans, and streams the workers' manifest rows
into the manifest as they arrive, so memory stays flat however large the archive is.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import posixpath
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline import discover, manifest, plans, storage
from pipeline.discover import Item, UsageError
from pipeline.methods import UnknownMethodError, resolve_params
from pipeline.plans import Plan
from pipeline.settings import RunSettings, describe_errors, earlier_params, params_json

log = logging.getLogger(__name__)
ProgressCallback = Callable[[dict[str, Any]], None]
# Batches given to each actor at a time: while it restores one, the next waits at hand.
BATCHES_PER_ACTOR = 2


@dataclass
class Summary:
    run_id: str
    manifest_uri: str
    counts: dict[str, int]
    resumed: int
    seconds: float
    report_uri: str | None = None

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def validate(settings: RunSettings, in_process: bool = False) -> str:
    """Check everything that can be checked before any work; return the params JSON."""
    method_params = resolve_method_params(settings)
    for uri in (settings.images, settings.out, settings.masks, settings.mask, settings.manifest):
        if uri and uri.startswith("memory://") and not in_process:
            raise UsageError(
                f"{uri}: memory:// lives inside one process and Ray workers cannot see it; "
                "use pipeline.restore_items for in-process work, or a folder or bucket"
            )
    try:
        discover.check_output_location(settings.images, settings.out, settings.storage_options)
    except ImportError as error:  # a backend not installed: "Install gcsfs to access ..."
        raise UsageError(f"cannot open {settings.images}: {error}") from None
    check_writable(settings)
    return params_json(settings.output_params(method_params))


def resolve_method_params(settings: RunSettings) -> dict[str, Any]:
    """The method's params with their defaults, or a one-line `UsageError`."""
    try:
        return resolve_params(settings.method, settings.method_params)
    except UnknownMethodError as error:
        raise UsageError(str(error)) from None
    except ValidationError as error:  # one line, not pydantic's multi-line dump
        raise UsageError(f"invalid params for method {settings.method!r}: "
                         f"{describe_errors(error, unknown='unknown param')} (`inpaint "
                         "methods` lists each method's params)") from None
    except ValueError as error:
        raise UsageError(f"invalid params for method {settings.method!r}: {error}") from None


def check_writable(settings: RunSettings) -> None:
    """OUT (and `--manifest`) must take writes: found now, not at the first item."""
    for what, uri in (("OUT", settings.out), ("--manifest", settings.manifest)):
        if not uri:
            continue
        try:
            storage.check_writable(uri, settings.storage_options)
        except storage.WriteRefused as error:
            raise UsageError(f"{what} is not writable: {error.reason} ({uri})") from None
        except (OSError, storage.StorageError) as error:
            raise UsageError(f"cannot write to {what} ({uri}): {type(error).__name__}: "
                             f"{error}") from None


def plan(settings: RunSettings, in_process: bool = False, temporary: bool = False) -> Plan:
    """List and pair the items into plan shards, and count what resume skips (a join of
    each shard against the manifest's done rows). The driver holds one shard at a time.

    The shards go to `OUT/_plan/<run_id>/`, or with `temporary` (a dry run) or
    `in_process` to a local temporary folder: nothing is written to OUT.
    """
    params = validate(settings, in_process)
    run_id = settings.run_id or new_run_id()
    accepted = {params} | earlier_params(settings, params)
    done = plans.no_keys() if settings.force else _done_keys(settings, accepted)
    shards = _shards(settings, run_id, temporary or in_process)
    return Plan.counted(run_id, params, shards, done)


def _shards(settings: RunSettings, run_id: str, temporary: bool) -> plans.Shards:
    """The plan's shards: those of an unfinished run given the same `--run-id` and made
    from the same inputs, or a new listing written as it goes."""
    where = (tempfile.mkdtemp(prefix="inpaint-plan-") if temporary
             else storage.join(settings.out, f"{plans.FOLDER}/{run_id}"))
    made_from = plans.made_from(settings)
    try:
        if settings.run_id and not temporary:
            reused = plans.reuse(where, made_from, settings.storage_options)
            if reused:
                log.info("run %s: reusing its plan of %d items in %s", run_id, reused.total,
                         where)
                return reused
        return plans.write(_find_items(settings), where, made_from, settings.storage_options)
    except plans.PlanNotWritten as error:
        if error.refused:  # a full OUT, as at any write of the run: exit status 5
            raise RunStopped(f"stopped: the plan could not be written: {error}. Nothing was "
                             "restored; free space (or restore write access) and run the "
                             "same command again.") from None
        raise UsageError(f"cannot write the plan: {error}") from None


def _find_items(settings: RunSettings) -> Iterator[Item]:
    """Loose files paired with their masks, or the rows of a Parquet or WebDataset
    dataset (pipeline.datasets), as the listing goes; the first `--limit` of them."""
    from pipeline import datasets

    if datasets.format_of(settings) != "files":
        items = datasets.find_items(settings)
    else:
        items = discover.iter_pairs(settings.images, settings.masks, settings.mask,
                                    settings.storage_options, settings.hand_masks)
        first = next(items, None)
        if first is None:  # a folder of parts given without --input-format
            datasets.refuse_parts_as_files(settings)
        items = itertools.chain([first] if first else [], items)
    return itertools.islice(items, settings.limit) if settings.limit else items


def _done_keys(settings: RunSettings, accepted: set[str]):
    try:
        return manifest.done_keys(settings.manifest_uri(), accepted, settings.storage_options)
    except (OSError, storage.StorageError) as error:
        raise UsageError(f"cannot read the manifest at {settings.manifest_uri()}: "
                         f"{type(error).__name__}: {error}") from None


class RunStopped(RuntimeError):
    """The run stopped early because storage refused writes for good (full, over quota,
    read-only, denied) or the manifest could not be written. `str()` is the message for a
    person: what and where, how many items were restored, and that rerunning resumes."""


def run(
    settings: RunSettings, progress: ProgressCallback | None = None, work: Plan | None = None
) -> Summary:
    """Restore every item IMAGES holds on Ray (embedded, or `settings.address`).

    `work` is a plan made beforehand by `plan(settings)`; without it, one is made here.
    Raises `RunStopped` at the first write the output location refuses for good: every
    later one would fail the same way.
    """
    started = datetime.now(UTC)
    work = work or plan(settings)
    writer = manifest.ManifestWriter(settings.manifest_uri(), work.run_id,
                                     settings.storage_options)
    log.info("run %s: %d items to restore, %d already done", work.run_id, work.todo_count,
             work.done_count)
    refused = None
    try:
        if work.todo_count:
            refused = _record(settings, work, writer, progress)
        writer.flush()
    except manifest.PartNotWritten as error:
        raise RunStopped(_stopped(settings, work, writer, refused, error)) from None
    except BaseException:  # Ctrl-C, a bug: keep the rows so far, then let it go on up
        with contextlib.suppress(manifest.PartNotWritten):
            writer.flush()
        raise
    if refused:
        raise RunStopped(_stopped(settings, work, writer, refused, None))
    _discard(work)
    seconds = (datetime.now(UTC) - started).total_seconds()
    summary = Summary(work.run_id, settings.manifest_uri(), dict(writer.counts),
                      work.done_count, seconds)
    if settings.report and writer.rows_written:
        summary.report_uri = _write_report(settings, work.run_id)
    return summary


def _discard(work: Plan) -> None:
    """Every item of the plan has its row now: its shards are not needed again. A stopped
    or killed run keeps them, for a rerun with the same `--run-id` to reuse."""
    try:
        work.discard()
    except (OSError, storage.StorageError) as error:  # litter, not a failed run
        log.warning("could not delete the plan in %s: %s", work.shards.uri, error)


def _record(settings: RunSettings, work: Plan, writer: manifest.ManifestWriter,
            progress: ProgressCallback | None) -> str | None:
    """Stream the workers' rows into the manifest, a batch at a time. At the first batch
    with a row whose write was refused, record that batch's other rows (its writes ran side
    by side, some finished before the refusal), stop the work (the pool and its queued
    batches) and return the refusal."""
    from pipeline.worker import REFUSED

    batches = _restore_on_ray(settings, work)
    try:
        for rows in batches:
            refused = [row["error"] for row in rows if row["error_kind"] == REFUSED]
            for fresh in writer.add([row for row in rows if row["error_kind"] != REFUSED]):
                if progress:
                    progress(fresh)
            if refused:
                return refused[0]
    finally:
        batches.close()
    return None


def _stopped(settings: RunSettings, work: Plan, writer: manifest.ManifestWriter,
             refused: str | None, lost: manifest.PartNotWritten | None) -> str:
    """The one message of a stopped run: why and where, what was restored, how to resume."""
    restored = sum(writer.counts[status] for status in manifest.DONE_STATUSES)
    not_done = work.todo_count - sum(writer.counts.values())
    reasons = [refused] if refused else []
    if lost:
        unrecorded = sum(row["status"] in manifest.DONE_STATUSES for row in writer.unwritten)
        reasons.append(f"the manifest could not be written{' either' if refused else ''}: "
                       f"{lost} (no partial part was left behind)")
        done = (f"{_items(restored)} restored in this run, {unrecorded} of them without a "
                "manifest row")
        resume = "it resumes, redoing the items without a row and those not done"
    else:
        done = f"{_items(restored)} restored in this run, recorded in {settings.manifest_uri()}"
        resume = "it resumes with the items not done"
    why = "; ".join(reasons)
    return (f"stopped: {why}. {done}; {not_done} not done. Free space (or restore write "
            f"access) and run the same command again: {resume}.")


def _items(count: int) -> str:
    return f"{count} item" + ("" if count == 1 else "s")


def _write_report(settings: RunSettings, run_id: str) -> str | None:
    try:
        from pipeline import report
    except ImportError:
        return None
    try:
        return report.build(settings.manifest_uri(), storage.join(settings.out, "_report"),
                            run_id=run_id, storage_options=settings.storage_options)
    except storage.WriteRefused as error:
        manifest_uri = settings.manifest_uri()
        raise RunStopped(f"stopped: the report could not be written: {error}. Every item is "
                         f"restored and recorded in {manifest_uri}; after freeing space, "
                         f"`inpaint report {manifest_uri}` writes it.") from None


def _restore_on_ray(settings: RunSettings, work: Plan):
    """Stream the manifest rows of each batch from an actor pool, a list per batch; start
    (and stop) a local Ray if needed."""
    from pipeline import localray

    started_here = connect(settings)
    try:
        yield from _stream_rows(settings, work)
    finally:
        if started_here:
            localray.stop()


def _stream_rows(settings: RunSettings, work: Plan):
    """The rows of every item from `settings.workers` actors, a list per batch as each
    finishes.

    Plain Ray actors, not Ray Data's actor pool: Ray Data hands each of its actors its
    function and context as object-store arguments, and with restarts on, Ray prints an
    error line about that onto the user's terminal in every run (ray-project/ray#53727).
    Our actor takes no constructor arguments: its settings travel inside the class.
    A killed actor (the OOM killer, SIGKILL) is restarted and its unfinished batches run
    again (max_restarts=-1, max_task_retries=-1): outputs are written atomically and the
    manifest writer drops replayed rows, so a replay is harmless.
    An actor of loose files works on `stages.BATCHES_AT_ONCE` batches at once (reading one
    while filling another, pipeline/stages.py), with one more waiting at hand.
    A killed process's cut-off writes leave temporaries named after the run: at the end,
    those in the folders of the batches its actor replayed are removed (pipeline.restarts).
    """
    import ray

    from pipeline import datasets, stages
    from pipeline.restarts import Replays

    actor_class, units, folders_of = _work_units(settings, work)
    at_once = stages.BATCHES_AT_ONCE if datasets.format_of(settings) == "files" else 1
    restorer = ray.remote(actor_class).options(
        num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker,
        max_restarts=-1, max_task_retries=-1, max_concurrency=at_once)
    actors = [restorer.remote() for _ in range(settings.workers)]
    batches = iter(units)
    running: dict[Any, tuple[int, Any]] = {}  # each task's actor (its index) and batch
    replays = Replays(folders_of)

    def give(index: int) -> None:
        batch = next(batches, None)
        if batch is not None:
            running[actors[index].restore.remote(batch)] = index, batch

    try:
        for index in range(len(actors)):
            for _ in range(BATCHES_PER_ACTOR + at_once - 1):
                give(index)
        while running:
            [done], _ = ray.wait(list(running), num_returns=1)
            index, batch = running.pop(done)
            others = [other for actor, other in running.values() if actor == index]
            give(index)
            rows = _rows_of(done)
            replays.noticed(rows, [batch, *others])
            yield rows
    finally:
        for actor in actors:
            ray.kill(actor)
        replays.sweep(work.run_id, settings.storage_options)


def _work_units(settings: RunSettings, work: Plan) -> tuple[type, Any, Callable]:
    """The actor class, what each of its tasks is given (`batch_size` items, or one part
    of a dataset, its output part written whole: pipeline.datasets) and the folders a
    task's writes go to. The actors' settings carry the run id, which their writes'
    temporaries are named after."""
    from pipeline import datasets
    from pipeline.worker import restorer_class, write_folders

    settings = settings.model_copy(update={"run_id": work.run_id})
    if datasets.format_of(settings) != "files":
        return (datasets.restorer_class(settings, work.params),
                datasets.part_tasks(work.marked_items()),
                lambda task: {posixpath.dirname(task.out_uri)})
    size = settings.batch_size
    return (restorer_class(settings, work.params),
            plans.batches(work.todo_items(), size),
            lambda batch: write_folders(settings, batch))


def _rows_of(batch) -> list[dict[str, Any]]:
    """A finished batch's rows; an actor that could not start fails the run, in words."""
    import ray

    try:
        return ray.get(batch)
    except ray.exceptions.ActorDiedError as error:
        raise WorkerStartError(f"a restoring worker could not start: {_cause(error)}") from None


def _cause(error) -> str:
    """The last line of a Ray error's text: the exception the actor's constructor raised
    (`pipeline.prior.PriorError: weights not found: ...` as `PriorError: ...`)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return re.sub(r"^(\w+\.)+(?=\w+:)", "", lines[-1]) if lines else type(error).__name__


class WorkerStartError(UsageError):
    """The actors could not start (their method failed to load, e.g. missing weights):
    a configuration error, found before any item was restored."""


def connect(settings: RunSettings) -> bool:
    """Connect to `settings.address`, or start an embedded local Ray; True if started here."""
    import ray

    from pipeline import localray

    if ray.is_initialized():
        return False
    _quiet_ray_logs()
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING,
             "include_dashboard": False}
    if settings.address:
        ray.init(address=settings.address, **quiet)
        return False
    needed = math.ceil(settings.workers * settings.cpus_per_worker)
    # Every server of the embedded Ray listens on 127.0.0.1 only, and Ray's token
    # authentication stays on (pipeline/localray.py).
    localray.start(num_cpus=max(os.cpu_count() or 1, needed), **quiet)
    return True


def _quiet_ray_logs() -> None:
    """Keep Ray's chatter off a user's terminal; it stays in Ray's own log files.

    The embedded Ray keeps token authentication (Ray's default since 2.59), so its
    one-time notice about it is not news to our users.
    """
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )


def restore_items(settings: RunSettings) -> list[dict]:
    """The same work as `run`, in this process and without Ray or a manifest (notebooks,
    benchmarks, `memory://`): returns the rows `run` would record."""
    from pipeline import datasets
    from pipeline.worker import Context, restore_item

    work = plan(settings, in_process=True)
    context = Context(settings, work.params)
    try:
        if datasets.format_of(settings) != "files":
            return datasets.restore_in_process(work.marked_items(), context)
        return [restore_item(item, context) for item in work.todo_items()]
    finally:
        work.discard()
