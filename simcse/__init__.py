"""SimCSE and its contrastive-loss variants on current PyTorch and Hugging Face transformers."""

__version__ = "0.1.0"

__all__ = ["SimCSE"]


def __getattr__(name: str):
    # `from simcse import SimCSE`, resolved on first use so that importing a light submodule
    # (simcse.errors, simcse.modeling.poolers) does not pay for loading transformers.
    if name == "SimCSE":
        from simcse.inference.tool import SimCSE

        return SimCSE
    raise AttributeError(f"module 'simcse' has no attribute {name!r}")
