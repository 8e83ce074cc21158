"""One typed settings object shared by the CLI, job specs and Ray workers.

Every field that changes an output is copied into the manifest's `params` column
(see `output_params`), which is also what resume compares.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

OutputFormat = Literal["png", "jpeg", "tiff", "webp"]

DEFAULT_METHOD = "hallucinate"
DEFAULT_MAX_PIXELS = 180_000_000


class RunSettings(BaseModel):
    """Everything `inpaint run` takes. Unknown keys are errors (job specs rely on it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: str = Field(description="Folder (walked recursively) or glob of input photos.")
    out: str = Field(description="Where restored photos go, same relative paths as IMAGES.")
    masks: str | None = Field(
        default=None,
        description="Folder of masks mirroring IMAGES, or 'auto' to detect damage.",
    )
    mask: str | None = Field(default=None, description="One mask applied to every image.")
    hand_masks: str | None = Field(
        default=None,
        description="With masks='auto': folder of hand-made masks that win over detection.",
    )
    input_format: Literal["auto", "files", "parquet", "webdataset"] = Field(
        default="auto",
        description="What IMAGES holds: loose files, Parquet parts or WebDataset tar shards "
                    "(auto: *.parquet is Parquet, *.tar WebDataset, anything else files).")
    image_column: str | None = Field(
        default=None, description="Dataset column (WebDataset: extension) of the image bytes.")
    mask_column: str | None = Field(
        default=None, description="Dataset column (WebDataset: extension) of the mask bytes.")
    key_column: str | None = Field(
        default=None, description="Parquet column of each row's key (default 'key' if there).")
    task: Literal["restore", "detect"] = Field(
        default="restore", description="'detect' writes damage masks to OUT instead.")
    detector: Literal["auto", "combined", "verified", "learned", "infrared", "tophat"] = Field(
        default="auto", description="Damage detector (pipeline.detect.DETECTORS).")
    sensitivity: float = Field(default=0.5, ge=0, le=1, description="Detector sensitivity.")
    detect_scale: float = Field(
        default=1.0, gt=0, le=1,
        description="Detect on the photo shrunk by this factor (0.5 for scans at twice "
                    "300-600 dpi, where dust and scratches are twice as large).")
    detect_margin: int = Field(
        default=0, ge=0,
        description="Leave the outer N px of each photo out of detection: a scan cropped "
                    "tight to its print shows the print's edge and the scanner's lid there.")
    detect_edge_wear: bool = Field(
        default=False,
        description="verified and combined (auto on prints) flag fainter damage near the "
                    "frame, where prints wear (pipeline.detectors.verified.EDGE_ZONE).")
    manifest: str | None = Field(default=None, description="Manifest folder (OUT/_manifest).")
    method: str = DEFAULT_METHOD
    method_params: dict[str, Any] = Field(default_factory=dict)
    invert_mask: bool = False
    resize_masks: bool = False
    output_format: OutputFormat | None = None
    seed: int = 0
    weights: str | None = Field(default=None, description="URI of prior-network weights.")
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=4, ge=1)
    address: str | None = None
    force: bool = False
    limit: int | None = Field(default=None, ge=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    report: bool = True
    run_id: str | None = None

    @field_validator("images", "out")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("images", "out", "masks", "mask", "hand_masks", "manifest", "weights")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        problem = unknown_scheme(value or "")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("storage_options")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Settings travel to workers, job specs and logs; credentials must come from the
        # provider's own chain (environment, profile, instance role), never from here.
        offending = credential_keys(value)
        if offending:
            raise ValueError(
                f"storage options may not carry credentials ({', '.join(offending)}); "
                "use the provider's standard chain (environment variables, profile, role)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _detect_needs_no_masks(cls, values: Any) -> Any:
        # `detect` finds every mask itself: pair photos the way `--masks auto` does.
        if isinstance(values, dict) and values.get("task") == "detect" and not values.get("masks"):
            values = {**values, "masks": "auto"}
        return values

    @model_validator(mode="after")
    def _edge_wear_needs_the_verifier(self) -> RunSettings:
        from pipeline.detect import check_edge_wear

        if self.detect_edge_wear:
            check_edge_wear(self.detector)  # a DetectorError is a ValueError: pydantic says it
        return self

    @model_validator(mode="after")
    def _columns_need_a_dataset(self) -> RunSettings:
        # Loose files have no columns: a column given for them would be silently ignored.
        from pipeline import datasets

        named = [name for name in ("image_column", "mask_column", "key_column")
                 if getattr(self, name)]
        if named and datasets.format_of(self) == "files":
            raise ValueError(f"{', '.join(named)}: only for a Parquet or WebDataset IMAGES "
                             "(a path ending .parquet or .tar, or --input-format)")
        return self

    def manifest_uri(self) -> str:
        return self.manifest or self.out.rstrip("/") + "/_manifest"

    def output_params(self, method_params: dict[str, Any]) -> dict[str, Any]:
        """The settings that decide the output pixels and bytes, with resolved method params."""
        detection = {"detector": self.detector, "sensitivity": self.sensitivity,
                     "detect_scale": self.detect_scale}
        if self.detect_margin:  # only when set: runs from before it keep their params
            detection["detect_margin"] = self.detect_margin
        if self.detect_edge_wear:  # likewise
            from pipeline.detectors.verified import edge_wear_id

            detection["detect_edge_wear"] = edge_wear_id()
        detecting = self.task == "detect" or self.masks == "auto"
        if detecting and self.detector in ("auto", "combined", "verified", "learned"):
            # Retrained weights find other damage: resume must redo what the old ones found.
            from pipeline.detect import weights_id

            detection["detector_weights"] = weights_id(self.detector)
        if self.task == "detect":
            return {"task": "detect", **detection, "max_pixels": self.max_pixels}
        # Detection decides the masks of `--masks auto`, so its settings decide the output.
        # The hand-masks folder is not among them: each photo's hand mask is in its own
        # input fingerprint, so a mask saved by `inpaint review` redoes that photo alone.
        auto = detection if self.masks == "auto" else {}
        # Which of a dataset's columns are the photo, its mask and its key decides the
        # output (and lets the report find a row again); loose files keep the params they
        # always had, so their resume is unchanged.
        from pipeline import datasets

        columns = ({"image_column": self.image_column, "mask_column": self.mask_column,
                    "key_column": self.key_column}
                   if datasets.format_of(self) != "files" else {})
        return auto | columns | {
            "method": self.method,
            "method_params": method_params,
            "invert_mask": self.invert_mask,
            "resize_masks": self.resize_masks,
            "mask_source": "auto" if self.masks == "auto" else "file",
            "output_format": self.output_format,
            "seed": self.seed,
            "weights": self.weights,
            "max_pixels": self.max_pixels,
        }


def earlier_params(settings: RunSettings, params: str) -> set[str]:
    """Params strings that earlier versions recorded for the same outputs, which resume
    accepts so that an upgrade redoes nothing: `--masks auto` runs used to record the
    hand-masks folder (none, or this run's), which the fingerprints now cover."""
    if settings.task == "detect" or settings.masks != "auto":
        return set()
    current = json.loads(params)
    return {params_json(current | {"hand_masks": folder}) for folder in (None, settings.hand_masks)}


def unknown_scheme(uri: str) -> str | None:
    """Why fsspec cannot open `uri`'s scheme, or None; fsspec itself would raise "Protocol not
    known" deep inside discovery, as a traceback."""
    for part in uri.split("::"):  # chained URLs: simplecache::s3://...
        scheme = fsspec.core.split_protocol(part)[0]
        # Registered classes (fsspec.registry) are not in available_protocols().
        if scheme and scheme not in fsspec.available_protocols() and scheme not in (
                fsspec.registry):
            return (f"unknown URI scheme {scheme!r} in {uri!r} (fsspec knows file, s3, gs, az, "
                    "http, memory, ...)")
    return None


# Parts of the option names fsspec backends take secrets under: s3fs key/secret/token and
# client_kwargs.aws_secret_access_key/aws_session_token, gcsfs token, adlfs account_key/
# sas_token/connection_string/client_secret/credential, HTTP headers.Authorization and auth.
CREDENTIAL_WORDS = ("key", "secret", "token", "password", "passphrase", "credential", "creds",
                    "sas", "auth", "cookie", "connection_string")


def names_credential(name: str) -> bool:
    return any(word in name.lower() for word in CREDENTIAL_WORDS)


def credential_keys(options: Any, path: str = "") -> list[str]:
    """Dotted paths of the keys, at any depth (mappings, and mappings in lists), that name a
    credential; a nested `client_kwargs.aws_secret_access_key` is as much a secret as a
    top-level one."""
    found: list[str] = []
    if isinstance(options, dict):
        for key, value in options.items():
            where = f"{path}.{key}" if path else str(key)
            if names_credential(str(key)):
                found.append(where)
            else:
                found += credential_keys(value, where)
    elif isinstance(options, list | tuple):
        for index, value in enumerate(options):
            found += credential_keys(value, f"{path}[{index}]")
    return sorted(found)


def describe_errors(error: ValidationError, unknown: str = "unknown setting") -> str:
    """A pydantic error as one line: `field: message; ...` (`unknown` for extra names)."""
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = unknown
        where = ".".join(str(part) for part in item["loc"])
        problems.append(f"{where}: {message}" if where else message)  # a model-wide check
    return "; ".join(problems)


def params_json(params: dict[str, Any]) -> str:
    """Canonical JSON, so equal settings always give equal strings (resume compares them)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
