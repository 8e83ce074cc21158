"""Restore damaged photos at scale: inpainting on Ray, from object storage.

Library entry points: `inpaint` (one array), `run` (a whole archive on Ray),
`restore_items` (the same work in-process), `restore_dataset` (the rows of a Ray Data
dataset, inside its user's own pipeline) and `RunSettings` (every setting, typed).
"""

import os

# OpenMP threads that spin while waiting turned a 50 ms torch step into 30 s on shared,
# loaded cores (measured in benchmarks/quality.py); every process that imports the
# pipeline, Ray workers included, sets this before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pipeline.datasets import restore_dataset  # noqa: E402
from pipeline.methods import inpaint, load_method, method_names  # noqa: E402
from pipeline.runner import plan, restore_items, run  # noqa: E402
from pipeline.settings import RunSettings  # noqa: E402

__all__ = ["RunSettings", "inpaint", "load_method", "method_names", "plan", "restore_dataset",
           "restore_items", "run"]
