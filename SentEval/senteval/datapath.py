"""Where the SentEval data lives: one resolver for every entry point.

Order of precedence:

1. an explicit directory (the ``--senteval_data`` flag, or ``params["task_path"]``);
2. the ``SENTEVAL_DATA`` environment variable;
3. ``SentEval/data`` in this repository, when it holds ``downstream/`` (where
   ``SentEval/data/downstream/download_dataset.sh`` puts the official archive);
4. ``../shared/data`` beside the repository, when present (the offline copy on development machines).

The directory returned is the one that *contains* ``downstream/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from senteval.errors import SentEvalError

ENV_VAR = "SENTEVAL_DATA"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DATA = REPO_ROOT / "SentEval" / "data"

HOW_TO_GET_DATA = (
    "get it with `cd SentEval/data/downstream && bash download_dataset.sh`, "
    f"or point --senteval_data / ${ENV_VAR} at a directory that contains downstream/"
)


def shared_dir() -> Path | None:
    """The ``shared/`` directory beside the repository (offline data and models), if present."""
    for candidate in (REPO_ROOT.parent / "shared", Path.cwd().parent / "shared"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _has_downstream(path: Path) -> bool:
    """True when ``path/downstream`` holds at least one task folder (not just the download script)."""
    downstream = path / "downstream"
    return downstream.is_dir() and any(child.is_dir() for child in downstream.iterdir())


def _candidates(explicit: str | os.PathLike | None) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if explicit:
        found.append(("--senteval_data", Path(explicit)))
    elif os.environ.get(ENV_VAR):
        found.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR])))
    else:
        found.append(("SentEval/data", BUNDLED_DATA))
        shared = shared_dir()
        if shared is not None:
            found.append(("../shared/data", shared / "data"))
    return found


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data directory holding ``downstream/``, or raise :class:`SentEvalError`.

    An explicit directory (or the environment variable) that lacks ``downstream/`` is an error: it is
    never silently replaced by a fallback. A path that points at ``downstream/`` itself is accepted.
    """
    tried = []
    for origin, path in _candidates(explicit):
        path = path.expanduser()
        if _has_downstream(path):
            return path.resolve()
        if path.name == "downstream" and _has_downstream(path.parent):
            return path.parent.resolve()
        tried.append(f"{origin}={path}")
        if origin in ("--senteval_data", f"${ENV_VAR}"):
            raise SentEvalError(
                f"SentEval data directory {str(path)!r} (from {origin}) has no downstream/ folder; "
                + HOW_TO_GET_DATA
            )
    raise SentEvalError("no SentEval data found (tried " + ", ".join(tried) + "); " + HOW_TO_GET_DATA)
