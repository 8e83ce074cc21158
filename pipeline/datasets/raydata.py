"""`pipeline.restore_dataset`: restore the photos of a Ray Data dataset, inside a pipeline
its user builds (read, filter, restore, write as they like).

Rows hold encoded photo bytes (a binary column, or a Hugging Face `Image` struct
`{bytes, path}`), optionally mask bytes and a key. Each row comes back once, its image
column holding the restored bytes (null where the item failed) and the manifest's columns
beside it (`status`, `error`, `item_id`, ...). Nothing is written anywhere: the caller's
pipeline decides where rows go. The fill is the one `inpaint run` does
(`pipeline.worker.restore_batch`), on an actor pool of `workers` actors.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from pipeline import discover, manifest
from pipeline.datasets import KEY_SEPARATOR, RAY_DATASET, parquet
from pipeline.discover import Item, UsageError
from pipeline.settings import RunSettings, params_json


def restore_dataset(ds, settings: RunSettings | None = None, *, prefix: str = "",
                    **options: Any):
    """Return `ds` restored, lazily, as a new `ray.data.Dataset`.

    `options` are `RunSettings` fields (`method="telea"`, `image_column="jpg"`,
    `mask_column="mask"`, `key_column="key"`, `mask="watermark.png"`, `workers=2`,
    `batch_size`, `method_params`, ...), over `settings` when both are given. Without a
    key column, a row's key (and so its `item_id`) is the hash of its image bytes.
    The manifest's columns are named `prefix + name`: img2dataset's parquet has `status`,
    `width` and `height` of its own, so `prefix="inpaint_"` keeps both.
    """
    from pipeline.runner import resolve_method_params

    fields = (settings.model_dump() if settings else {}) | options
    settings = RunSettings(**(fields | {"images": RAY_DATASET, "out": RAY_DATASET}))
    params = params_json(settings.output_params(resolve_method_params(settings)))
    schema = ds.schema(fetch_if_missing=False)
    if schema is not None and hasattr(schema, "names"):
        _check_columns(list(schema.names), settings, prefix)
    mask_uri = (discover.single_mask_info(settings.mask, settings.storage_options)[0]
                if settings.mask else None)
    return ds.map_batches(
        _restorer_class(settings, params, mask_uri, prefix), batch_format="pyarrow",
        batch_size=settings.batch_size, concurrency=settings.workers,
        num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker)


def _check_columns(names: list[str], settings: RunSettings, prefix: str) -> None:
    """Columns named that are not there, or that the manifest's would overwrite: said
    before any work (types are checked per batch, where Arrow's own are at hand)."""
    clash = sorted(set(names) & {prefix + name for name in manifest.COLUMNS})
    if clash:
        raise UsageError(f"the dataset's columns {', '.join(clash)} are also manifest "
                         "columns that restore_dataset adds; pass prefix='inpaint_' (or "
                         "another) to name those apart")
    parquet.columns_of(pa.schema([(name, pa.binary()) for name in names]), settings, "dataset")


def _restorer_class(settings: RunSettings, params: str, mask_uri: str | None,
                    prefix: str) -> type:
    from pipeline.worker import restorer_class

    class DatasetRestorer(restorer_class(settings, params)):
        def __init__(self):
            super().__init__()
            self.context.keep_outputs = True

        def __call__(self, batch: pa.Table) -> pa.Table:
            return restore_table(batch, self.context, mask_uri, prefix)

    return DatasetRestorer


def restore_table(table: pa.Table, context, mask_uri: str | None = None,
                  prefix: str = "") -> pa.Table:
    """One batch of rows restored: image bytes replaced, manifest columns appended."""
    from pipeline.worker import OUTPUT_DATA, restore_batch

    settings = context.settings
    _check_columns(table.schema.names, settings, prefix)
    columns = parquet.columns_of(table.schema, settings, "dataset")
    images = parquet.bytes_of(table.column(columns.image))
    masks = (parquet.bytes_of(table.column(columns.mask)) if columns.mask
             else [None] * len(images))
    keys = ([str(key) for key in table.column(columns.key).to_pylist()] if columns.key
            else ["sha256:" + hashlib.sha256(image or b"").hexdigest()[:20] for image in images])
    items = [_item(key, image, mask, columns, mask_uri)
             for key, image, mask in zip(keys, images, masks, strict=True)]
    rows = restore_batch(items, context)
    restored = [row.pop(OUTPUT_DATA, None) for row in rows]
    index = table.schema.get_field_index(columns.image)
    table = table.set_column(index, table.schema.field(index),
                             parquet.with_bytes(table.column(index), restored,
                                                settings.output_format))
    for name, column in zip(manifest.COLUMNS, manifest.to_table(rows).columns, strict=True):
        table = table.append_column(manifest.SCHEMA.field(name).with_name(prefix + name),
                                    column)
    return table


def _item(key: str, image: bytes | None, mask: bytes | None, columns: parquet.Columns,
          mask_uri: str | None) -> Item:
    problem = None
    if image is None:
        problem = f"no image bytes for {key} (null)"
    elif mask_uri is None and mask is None:
        problem = (f"no mask bytes for {key} (null)" if columns.mask else
                   "no mask given: pass mask_column=NAME or mask=FILE")
    return Item(
        item_id=discover.item_id_for(key),
        relative_path=key,
        # The row's key names it in errors and in the manifest columns.
        image_uri=key,
        mask_uri=mask_uri or (f"{key}{KEY_SEPARATOR}{columns.mask}" if columns.mask else None),
        input_fingerprint=hashlib.sha256((image or b"") + (mask or b"")).hexdigest()[:32],
        problem=problem,
        image_bytes=image or b"",
        mask_bytes=None if mask_uri else mask,
    )
