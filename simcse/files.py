"""Atomic file writing: the one writer of result, marker and config files (no heavy imports, so the
benches' measured processes can use it)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """A file handle whose content replaces ``path`` when the block ends without an exception: written to a
    temporary file beside ``path`` (its directory made if needed), fsynced and renamed over ``path``
    (atomic on POSIX). A crash leaves the previous file or the new one, never part of one; an exception
    leaves the previous file and no temporary one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`). The one atomic writer of the package,
    the benches and the scripts."""
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, payload, indent: int = 2) -> None:
    """:func:`atomic_write_text` of ``payload`` as indented JSON with a final newline."""
    atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")
