"""Atomic file writing: the one writer of result, marker and config files (no heavy imports, so the
benches' measured processes can use it)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` (its directory made if needed), fsync it and rename
    it over ``path`` (atomic on POSIX): a crash leaves the previous file or the new one, never part of one.
    The one atomic writer of the package, the benches and the scripts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, payload, indent: int = 2) -> None:
    """:func:`atomic_write_text` of ``payload`` as indented JSON with a final newline."""
    atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")
