"""Parquet parts: one row per photo, its encoded bytes in a column.

Two layouts are read and written back as they came: a binary column (img2dataset's `jpg`)
and a struct `{bytes, path}` (a Hugging Face `Image` feature, whose schema metadata is
kept). The output part has the input's columns and row order, the image column holding
the restored bytes; rows that failed are left out (the manifest has them).
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import imageio, storage
from pipeline.discover import UsageError
from pipeline.settings import RunSettings

# Looked for in this order when --image-column is not given (HF, img2dataset).
IMAGE_COLUMNS = ("image", "jpg", "png", "jpeg", "webp")
MASK_COLUMN = "mask"
KEY_COLUMN = "key"
# Schema metadata of an output part without a key column: its rows' keys (input row
# numbers), since failed rows are left out and numbers alone would no longer match.
ROW_KEYS = b"inpaint.row_keys"


@dataclass(frozen=True)
class Columns:
    image: str
    mask: str | None
    key: str | None


def columns_of(schema: pa.Schema, settings: RunSettings, where: str) -> Columns:
    """The image, mask and key columns the settings name, or the conventional ones there."""
    names = schema.names
    if settings.mask_column and settings.mask:
        raise UsageError("give either --mask-column or --mask, not both")
    image = settings.image_column or next((n for n in IMAGE_COLUMNS if n in names), None)
    if image is None:
        raise UsageError(f"{where}: no image column (looked for {', '.join(IMAGE_COLUMNS)}); "
                         f"name it with --image-column (columns: {', '.join(names)})")
    mask = settings.mask_column or (MASK_COLUMN if MASK_COLUMN in names and not settings.mask
                                    else None)
    key = settings.key_column or (KEY_COLUMN if KEY_COLUMN in names else None)
    for what, name in (("image", image), ("mask", mask), ("key", key)):
        if name and name not in names:
            raise UsageError(f"{where}: no {what} column {name!r} (columns: "
                             f"{', '.join(names)})")
    for name in filter(None, (image, mask)):
        if not is_bytes_type(schema.field(name).type):
            raise UsageError(f"{where}: column {name!r} is {schema.field(name).type}, not "
                             "image bytes (binary, or a struct with 'bytes' as Hugging Face's "
                             "Image feature writes)")
    return Columns(image, mask, key)


def is_bytes_type(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and is_bytes_type(kind.field(index).type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def bytes_of(column: pa.ChunkedArray | pa.Array) -> list[bytes | None]:
    if pa.types.is_struct(column.type):
        column = pc.struct_field(column, "bytes")
    return column.to_pylist()


def with_bytes(column: pa.ChunkedArray | pa.Array, values: list[bytes | None],
               output_format: str | None = None) -> pa.Array:
    """`column` with its bytes replaced by `values` (None: a null row), type kept; with
    `--format`, a struct's `path` takes the new format's extension, as the bytes did."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if not pa.types.is_struct(kind):
        return pa.array(values, kind)
    children = [pa.array(values, kind.field(i).type) if kind.field(i).name == "bytes"
                else column.field(i) for i in range(kind.num_fields)]
    path = kind.get_field_index("path")
    if output_format and path >= 0:
        extension = imageio.EXTENSIONS[imageio.FORMAT_NAMES[output_format]]
        children[path] = pa.array(
            [None if name is None else posixpath.splitext(name)[0] + extension
             for name in children[path].to_pylist()], kind.field(path).type)
    return pa.StructArray.from_arrays(children, fields=list(kind),
                                      mask=pa.array([value is None for value in values]))


def row_keys(table: pa.Table, columns: Columns) -> list[str]:
    """Each row's key: the key column as text, else the row's number in the input part."""
    if columns.key:
        return [str(key) for key in table.column(columns.key).to_pylist()]
    return numbered_keys(table.schema, table.num_rows)


def numbered_keys(schema: pa.Schema, rows: int) -> list[str]:
    """Keys of a part without a key column: row numbers, or those an output part kept."""
    stored = (schema.metadata or {}).get(ROW_KEYS)
    return json.loads(stored) if stored else [str(row) for row in range(rows)]


def scan(fs, path: str, settings: RunSettings) -> list:
    """The rows of one part as the driver sees them: keys only (the footer and the key
    column are read; the images are not)."""
    from pipeline.datasets.plan import Entry

    where = storage.full_uri(fs, path)

    def read() -> tuple[Columns, list[str]]:
        with fs.open(path, "rb") as stream:
            part = pq.ParquetFile(stream)
            columns = columns_of(part.schema_arrow, settings, where)
            if not columns.key:
                return columns, numbered_keys(part.schema_arrow, part.metadata.num_rows)
            keys = part.read(columns=[columns.key]).column(0).to_pylist()
            return columns, keys

    try:
        columns, keys = storage.with_retries(read, f"read {where}")
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(f"cannot read the Parquet part {where}: {type(error).__name__}: "
                         f"{error}") from None
    if None in keys or len(set(keys)) != len(keys):
        raise UsageError(f"{where}: the key column {columns.key!r} has empty or repeated keys; "
                         "name a column of unique keys with --key-column")
    keys = [str(key) for key in keys]
    return [Entry(key, f"{key}:{columns.mask}" if columns.mask else None) for key in keys]


def _read(data: bytes) -> pa.Table:
    return storage.read_parquet(data)


def read_samples(data: bytes, settings: RunSettings) -> dict[str, tuple]:
    """`{key: (image bytes, mask bytes or None)}` of one part."""
    table = _read(data)
    columns = columns_of(table.schema, settings, "part")
    images = bytes_of(table.column(columns.image))
    masks = bytes_of(table.column(columns.mask)) if columns.mask else [None] * len(images)
    return dict(zip(row_keys(table, columns), zip(images, masks, strict=True), strict=True))


def keys_of(data: bytes, settings: RunSettings) -> set[str]:
    table = _read(data)
    return set(row_keys(table, columns_of(table.schema, settings, "output part")))


def write_part(data: bytes, settings: RunSettings, outputs: dict[str, bytes],
               old: bytes | None, carried: set[str]) -> bytes:
    """The output part: the input's rows that are restored now (`outputs`) or were before
    (`carried`, their bytes from the `old` output part), in input order."""
    table = _read(data)
    columns = columns_of(table.schema, settings, "part")
    done_before: dict[str, bytes] = {}
    if carried:
        previous = _read(old)
        previous_columns = columns_of(previous.schema, settings, "output part")
        done_before = {key: value for key, value in zip(
            row_keys(previous, previous_columns), bytes_of(previous.column(columns.image)),
            strict=True) if key in carried}
    keys = row_keys(table, columns)
    rows = [row for row, key in enumerate(keys) if key in outputs or key in done_before]
    values = [outputs.get(keys[row], done_before.get(keys[row])) for row in rows]
    restored = table.take(pa.array(rows, pa.int64()))
    index = restored.schema.get_field_index(columns.image)
    restored = restored.set_column(index, restored.schema.field(index),
                                   with_bytes(restored.column(index), values,
                                              settings.output_format))
    if not columns.key:
        metadata = dict(table.schema.metadata or {})
        metadata[ROW_KEYS] = json.dumps([keys[row] for row in rows]).encode()
        restored = restored.replace_schema_metadata(metadata)
    buffer = io.BytesIO()
    pq.write_table(restored, buffer)
    return buffer.getvalue()
