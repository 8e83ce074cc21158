"""Restore damaged photos at scale: inpainting on Ray, from object storage.

Library entry points: `inpaint` (one array), `run` (a whole archive on Ray),
`restore_items` (the same work in-process) and `RunSettings` (every setting, typed).
"""

from pipeline.methods import inpaint, load_method, method_names
from pipeline.runner import plan, restore_items, run
from pipeline.settings import RunSettings

__all__ = ["RunSettings", "inpaint", "load_method", "method_names", "plan", "restore_items",
           "run"]
