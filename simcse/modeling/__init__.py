"""Models and poolers: the contrastive wrappers around a Hugging Face backbone (:mod:`~simcse.modeling.models`;
any family's generated one, :mod:`~simcse.modeling.backbones`), LoRA adapters (:mod:`~simcse.modeling.lora`,
through peft), the pooler records (:mod:`~simcse.modeling.poolers`), inference encoding
(:mod:`~simcse.modeling.encoder`),
the frozen guide of guided losses (:mod:`~simcse.modeling.guide`) and the checkpoint conversion to a
plain Hugging Face model (:mod:`~simcse.modeling.convert`).

Imports: the foundation (:mod:`simcse.errors`, :mod:`simcse.files`), the SentEval package's device rule,
transformers and (for LoRA, lazily) peft;
never data, losses, evaluation, inference or training.
"""
