"""SimCSE and its contrastive-loss variants on current PyTorch and Hugging Face transformers."""

__version__ = "0.1.0"
