"""What the GPU check runs on: one visible GPU, the modules it needs, library versions, GPU and TF32 state.

Nothing here touches CUDA at import, so :func:`pin_one_gpu` can run before the first CUDA call.
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterable, MutableMapping
from importlib.metadata import PackageNotFoundError, version

# Modules without which nothing runs (the data path imports datasets and its dependencies), and modules
# one part needs (that part records the error and the rest runs).
REQUIRED = ("torch", "transformers", "accelerate", "tokenizers", "safetensors", "huggingface_hub", "numpy",
            "scipy", "pandas", "pyarrow", "fsspec", "datasets", "dill", "multiprocess", "xxhash")
OPTIONAL = {"sentence_transformers": "the peer sides", "prettytable": "the STS side (our evaluation's tables)"}
# Distributions whose versions the report records.
DISTRIBUTIONS = ("torch", "transformers", "accelerate", "sentence-transformers", "datasets", "tokenizers",
                 "huggingface_hub", "safetensors", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "peft",
                 "fsspec", "dill", "multiprocess", "xxhash", "prettytable", "wcwidth")
# Modules the pack carries: the report records where each was loaded from (the pack's folder or the node's).
FROM_PACK = ("datasets", "dill", "multiprocess", "xxhash", "prettytable", "wcwidth")


def pin_one_gpu(env: MutableMapping[str, str] = os.environ) -> dict:
    """Make exactly one GPU visible, before CUDA starts: unset ``CUDA_VISIBLE_DEVICES`` becomes ``0``, a
    list keeps its first entry (several visible GPUs would make the Trainer wrap the model in
    DataParallel, and the sides would not measure one GPU). Empty or ``-1`` means no GPU: kept, and
    reported. Returns ``{"before", "after", "note"}``."""
    before = env.get("CUDA_VISIBLE_DEVICES")
    if before is None:
        after, note = "0", "CUDA_VISIBLE_DEVICES was unset: set to 0 (the first GPU); set it to choose another"
    else:
        entries = [e.strip() for e in before.split(",") if e.strip()]
        if not entries or entries[0] == "-1":
            after, note = before, "CUDA_VISIBLE_DEVICES hides every GPU"
        elif len(entries) > 1:
            after, note = entries[0], f"CUDA_VISIBLE_DEVICES={before} names {len(entries)} GPUs: only {entries[0]} kept"
        else:
            after, note = entries[0], f"CUDA_VISIBLE_DEVICES={before}: one GPU"
    env["CUDA_VISIBLE_DEVICES"] = after
    return {"before": before, "after": after, "note": note}


def preflight(required: Iterable[str] = REQUIRED, optional: Iterable[str] = tuple(OPTIONAL)) -> dict:
    """Import every module the check needs; ``{"missing": [...], "missing_optional": [...], "errors":
    {module: message}}``. An import that fails for another reason than absence (a wheel built for
    another Python) counts as missing too, its message kept."""
    found = {"missing": [], "missing_optional": [], "errors": {}}
    for names, key in ((required, "missing"), (optional, "missing_optional")):
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as err:  # ImportError, or a broken binary wheel
                found[key].append(name)
                found["errors"][name] = f"{type(err).__name__}: {err}"
    return found


def versions() -> dict:
    """Python, platform, and the version of every distribution of :data:`DISTRIBUTIONS` (None: absent)."""
    found = {"python": platform.python_version(), "platform": platform.platform(), "executable": sys.executable}
    for name in DISTRIBUTIONS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def module_locations(names: Iterable[str] = FROM_PACK) -> dict:
    """Where each module is loaded from (the pack's folder on PYTHONPATH, or the node's own); None: absent."""
    import importlib.util

    def origin(name: str) -> str | None:
        if name in sys.modules:
            return getattr(sys.modules[name], "__file__", None)
        spec = importlib.util.find_spec(name)
        return spec.origin if spec is not None else None

    return {name: origin(name) for name in names}


def guarded(fn):
    """``fn()``, or ``{"error": ...}`` when it raises: a report field must never stop the check."""
    try:
        return fn()
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


def tf32_state() -> dict:
    """Whether fp32 matmuls and convolutions may use TF32 (the fp32 sides' speed and their MFU peak).
    Reads the legacy flags (torch raises when a process mixes them with ``fp32_precision``: wrap it in
    :func:`guarded`)."""
    import torch

    with warnings.catch_warnings():  # torch 2.9+ deprecates allow_tf32 in favour of fp32_precision
        warnings.simplefilter("ignore")
        state = {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                 "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                 "float32_matmul_precision": torch.get_float32_matmul_precision()}
        for key, backend in (("matmul_fp32_precision", torch.backends.cuda.matmul),
                             ("cudnn_fp32_precision", torch.backends.cudnn)):
            value = getattr(backend, "fp32_precision", None)
            if value is not None:
                state[key] = str(value)
    state["fp32_matmuls_use_tf32"] = (state["matmul_allow_tf32"] or state["float32_matmul_precision"] != "highest"
                                      or state.get("matmul_fp32_precision") == "tf32")
    return state


def gpu_info() -> dict | None:
    """The visible GPU: name, compute capability, memory, SM count, CUDA/cuDNN builds, the driver (from
    nvidia-smi when it answers within 10 s; every GPU of the machine, as nvidia-smi ignores
    CUDA_VISIBLE_DEVICES). None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info = {"name": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count,
            "device_count": torch.cuda.device_count(), "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "bf16_supported": torch.cuda.is_bf16_supported()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()[:200]
    except (OSError, subprocess.TimeoutExpired) as err:
        info["nvidia_smi"] = f"not available ({type(err).__name__})"
    return info
