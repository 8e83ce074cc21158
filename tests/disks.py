"""Real disks for the storage tests: a tmpfs mounted for a test (full or read-only), the
umask, and the modes of what was written. A module of its own, not a test module: importing
a test module from another makes pytest hold two copies of it (and of what it registers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A real tmpfs mounted at `path` for the test (`size=64k`, `ro,size=1m`, ...).

    The tests run as root, where chmod stops no write: a read-only or full filesystem must
    be real. Skips, saying why, where the machine does not allow mounting.
    """
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a test tmpfs needs root and the mount command")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine refuses to mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    """Change a test tmpfs in place: `size=1m` frees space, `rw` makes it writable."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@contextlib.contextmanager
def umask(value: int):
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def file_modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
            for p in root.rglob("*") if p.is_file()}
