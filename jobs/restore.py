"""The Ray job entrypoint: `python -m jobs.restore --spec SPEC.yaml` (or `--spec-json`).

Runs on the cluster, started by the Jobs API (`inpaint submit`, a KubeRay RayJob): reads
the spec, resolves its storage options from this machine's environment, and runs the
restore on the cluster it runs on. Exit status as `inpaint run`: 0 ok, 1 some item failed,
2 a usage or configuration error found before any work, 5 stopped because storage refused
writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pydantic import ValidationError

from pipeline import jobspec, runner
from pipeline.discover import UsageError
from pipeline.storage import StorageError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.restore", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="YAML job spec (a path on the machine the job runs on)")
    source.add_argument("--spec-json", help="the spec as JSON, as `inpaint submit` sends it")
    parser.add_argument("--out", help="override the spec's `out` (e.g. a bucket)")
    return parser.parse_args(argv)


def load_spec(args: argparse.Namespace) -> jobspec.JobSpec:
    overrides = {"out": args.out} if args.out else {}
    if args.spec:
        return jobspec.load(args.spec, overrides)
    try:
        return jobspec.JobSpec.model_validate({**json.loads(args.spec_json), **overrides})
    except json.JSONDecodeError as error:
        raise jobspec.SpecError(f"--spec-json is not valid JSON: {error.msg}") from None
    except ValidationError as error:
        raise jobspec.SpecError(jobspec.describe(error, "--spec-json", {}, set())) from None


def plan(settings) -> runner.Plan:
    """`runner.plan`, with storage that cannot be listed (a missing bucket, a denial) as a
    configuration error: the job log then ends in one line that says why."""
    try:
        return runner.plan(settings)
    except (OSError, StorageError) as error:
        raise UsageError(f"cannot list the job's storage (images {settings.images}, "
                         f"out {settings.out}): {type(error).__name__}: {error}") from None


def _where(uri: str) -> str:
    """Local paths in full: relative ones resolve inside the job's working_dir."""
    return uri if "://" in uri else os.path.abspath(uri)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import Reporter, print_summary

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        spec = load_spec(args)
        settings = spec.run_settings()
        print(f"job {spec.name}: restoring {settings.images} -> {_where(settings.out)} with "
              f"{settings.method} on {settings.workers} worker(s), "
              f"{settings.gpus_per_worker:g} GPU each", flush=True)
        work = plan(settings)
        with Reporter(len(work.todo)) as reporter:
            summary = runner.run(settings, progress=reporter, work=work)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except runner.RunStopped as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 5
    print_summary(summary)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
