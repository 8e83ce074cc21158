"""Job specs: a YAML file that carries everything `inpaint run` takes, plus a name and a schedule.

Specs are validated by a typed model; every error names its field and the line it is on.
Storage options that differ per cluster come from environment variables named in the spec,
resolved where the job runs, so a spec (and the job's entrypoint) never holds a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter
from pydantic import ValidationError, field_validator

from pipeline.discover import UsageError
from pipeline.settings import RunSettings, names_credential

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Lines = dict[tuple[str, ...], int]


class SpecError(UsageError):
    """A job spec that cannot run; the message lists every problem with its line."""


class JobSpec(RunSettings):
    """`RunSettings` plus what a cluster job needs. Unknown keys are errors (inherited)."""

    name: str = "inpaint"
    schedule: str | None = None
    storage_options_env: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        # The name becomes part of Ray submission ids and of log file names on the cluster.
        if not _NAME.match(value):
            raise ValueError("must be 1-48 lowercase letters, digits or '-', starting with "
                             "a letter or digit")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r} (e.g. '0 3 * * *')")
        return value

    @field_validator("storage_options_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(v for v in value.values() if not _ENV_NAME.match(v))
        if bad:
            raise ValueError(f"values must be environment variable names, got {bad}")
        # The same no-credentials rule as inline storage options, for the option names and for
        # the variables they read: `endpoint_url: AWS_SECRET_ACCESS_KEY` is a secret too.
        offending = sorted(option if names_credential(option) else f"{option} from {name}"
                           for option, name in value.items()
                           if names_credential(option) or names_credential(name))
        if offending:
            raise ValueError(f"storage options may not carry credentials ({', '.join(offending)})"
                             "; credentials come from the cluster's own chain (instance role, "
                             "service account, its AWS_* variables)")
        return value

    @field_validator("address")
    @classmethod
    def _no_address(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("a job runs on the cluster it is submitted to; name the cluster "
                             "with `inpaint submit --address`")
        return value

    def run_settings(self, environ: Mapping[str, str] | None = None) -> RunSettings:
        """The settings the job runs with, on the cluster: storage options read from
        `environ` (default: this process's environment), connected to the local cluster."""
        environ = os.environ if environ is None else environ
        missing = sorted(v for v in self.storage_options_env.values() if v not in environ)
        if missing:
            raise SpecError(f"storage_options_env: environment variable(s) {', '.join(missing)}"
                            " not set where the job runs")
        options = {**self.storage_options,
                   **{k: environ[v] for k, v in self.storage_options_env.items()}}
        fields = self.model_dump(exclude={"name", "schedule", "storage_options_env"})
        return RunSettings(**{**fields, "storage_options": options, "address": "auto"})

    def schedule_slot(self, now: datetime | None = None) -> datetime | None:
        """The latest tick of `schedule` at or before `now` (UTC): the run this job stands for.

        A cron retry minutes later lands in the same slot, hence the same submission id.
        """
        if self.schedule is None:
            return None
        now = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
        return croniter(self.schedule, now + timedelta(seconds=1)).get_prev(datetime)


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> JobSpec:
    """Read a YAML spec; `overrides` (command-line options) replace the file's values."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise SpecError(f"{path}: cannot read the job spec: {reason}") from None
    return parse(text, str(path), overrides)


def parse(text: str, source: str, overrides: Mapping[str, Any] | None = None) -> JobSpec:
    data, lines = _read_yaml(text, source)
    overrides = dict(overrides or {})
    try:
        spec = JobSpec.model_validate({**data, **overrides})
    except ValidationError as error:
        raise SpecError(describe(error, source, lines, set(overrides))) from None
    _check_method(spec, source, lines, set(overrides))
    return spec


def _check_method(spec: JobSpec, source: str, lines: Lines, overridden: set[str]) -> None:
    """Fail on the submitting machine, not minutes later on the cluster, for a method or
    method params that cannot work."""
    from pipeline.methods import UnknownMethodError, resolve_params

    try:
        resolve_params(spec.method, spec.method_params)
    except UnknownMethodError as error:
        problem = ("method", str(error))
    except ValidationError as error:
        item = error.errors()[0]
        where = ".".join(str(part) for part in ("method_params", *item["loc"]))
        problem = (where, "unknown param (`inpaint methods` lists each method's params)"
                   if item["type"] == "extra_forbidden" else
                   item["msg"].removeprefix("Value error, "))
    except ValueError as error:
        problem = ("method_params", str(error))
    else:
        return
    field, message = problem
    loc = tuple(field.split("."))
    if loc[0] in overridden:
        raise SpecError(f"command line: {field}: {message}")
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
    raise SpecError(f"{source}:{line}: {field}: {message}")


def _read_yaml(text: str, source: str) -> tuple[dict[str, Any], Lines]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise SpecError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if data is None:
        data, root = {}, None
    if not isinstance(data, dict):
        raise SpecError(f"{source}:1: a job spec is a mapping of settings (key: value)")
    lines: Lines = {}
    problems: list[str] = []
    if root is not None:
        _index_lines(root, (), lines, problems, source)
    if problems:
        raise SpecError("\n".join(problems))
    return data, lines


def _index_lines(node, path: tuple[str, ...], lines: Lines, problems: list[str],
                 source: str) -> None:
    """Record the line of every mapping key; PyYAML keeps the last of duplicate keys
    silently, so a duplicate is reported here instead."""
    lines.setdefault(path, node.start_mark.line + 1)  # a key's line, not its value's
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key, value in node.value:
        child = (*path, str(key.value))
        if key.value in seen:
            problems.append(f"{source}:{key.start_mark.line + 1}: {'.'.join(child)}: "
                            "duplicate key")
        seen.add(key.value)
        lines[child] = key.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            _index_lines(value, child, lines, problems, source)


def describe(error: ValidationError, source: str, lines: Lines, overridden: set[str]) -> str:
    """One line per problem: `spec.yaml:LINE: field: message`."""
    problems = []
    for item in error.errors():
        loc = tuple(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (see `inpaint submit --help` for the settings a spec takes)"
        field = ".".join(loc) or "spec"
        if loc and loc[0] in overridden:
            problems.append((0, f"command line: --{loc[0].replace('_', '-')}: {message}"))
            continue
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
        problems.append((line, f"{source}:{line}: {field}: {message}"))
    return "\n".join(text for _, text in sorted(problems, key=lambda p: p[0]))
