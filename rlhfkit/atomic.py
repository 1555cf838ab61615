"""Atomic writes: a crash leaves the previous complete file or folder, never a half-written one."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and os.replace."""
    write_bytes(path, text.encode())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def versioned_dir(link: str | os.PathLike):
    """Yield a fresh folder to fill; on success `link` (a symlink) points at it in one atomic step.

    `out/model -> .model-v3`: readers always see a complete version. Older versions are deleted after the
    switch; a crash before it leaves `link` on the previous version (and a stray `.model-vN.tmp` folder)."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{link.name}-v"
    versions = [int(p.name[len(prefix):]) for p in link.parent.glob(prefix + "*") if p.name[len(prefix):].isdigit()]
    new = link.parent / f"{prefix}{max(versions, default=0) + 1}"
    tmp = new.with_name(new.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    yield tmp
    os.replace(tmp, new)
    staged = link.parent / f".{link.name}.link{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    staged.symlink_to(new.name)
    if link.exists() and not link.is_symlink():  # a plain folder from an older layout: move it aside
        shutil.rmtree(link)
    os.replace(staged, link)
    for p in link.parent.glob(prefix + "*"):
        if p != new:
            shutil.rmtree(p, ignore_errors=True)
