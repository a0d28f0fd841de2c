"""The model card (README.md) of a sentence-transformers export, written from the training run's own files.

Every value on the card is read from a file; none is typed:

* ``<checkpoint>/config.json``: architecture, width, pooler (and ``mlp_only_train``), the loss and its
  hyperparameters (``simcse_loss``), LoRA settings (``simcse_lora``; the export holds them merged), prompts;
* ``<checkpoint>/simcse_run.json`` (:data:`RUN_FACTS`, written by ``train.py`` beside the final model): base
  model, training file and its examples, steps, global batch, learning rate, max length, seed, library
  versions of the run;
* ``<checkpoint>/trainer_state.json``: the dev evaluations during training (the first and the last, and the
  best metric when one was kept);
* result files given with ``--card_results``: an ``evaluation.py --output_json`` file (its STS, transfer and
  retrieval tables) or a ``multiseed.json`` (mean ± sample std over the seeds).

A fact missing from the files (a checkpoint from before ``simcse_run.json``, or of the original code) is
written as "not recorded", never guessed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from simcse.errors import SimCSEError
from simcse.files import atomic_write_text

RUN_FACTS = "simcse_run.json"
NOT_RECORDED = "not recorded"
CITATION = """@inproceedings{gao2021simcse,
   title={{SimCSE}: Simple Contrastive Learning of Sentence Embeddings},
   author={Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
   booktitle={Empirical Methods in Natural Language Processing (EMNLP)},
   year={2021}
}"""


def _json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise SimCSEError(f"{path} is not readable JSON ({err}); fix or remove it") from None


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def _dev_rows(state: dict | None) -> list[str]:
    """The first and last dev evaluation of the run (x 100), and its best metric when one was kept."""
    evals = [entry for entry in (state or {}).get("log_history", []) if any(k.startswith("eval_") for k in entry)]
    if not evals:
        return [f"Dev evaluation during training: {NOT_RECORDED}."]
    names = [k for k in evals[0] if k.startswith("eval_") and k.endswith(("spearman", "avg_sts", "ndcg@10"))]
    first, last = evals[0], evals[-1]
    rows = [[name.removeprefix("eval_"), f"{first[name] * 100:.2f}", f"{last[name] * 100:.2f}"]
            for name in names if name in last]
    lines = [f"Dev evaluation during training (x 100; step {first.get('step')} and step {last.get('step')}, "
             "from trainer_state.json):", "", *_table(["metric", "first", "last"], rows)]
    if state.get("best_metric") is not None:
        lines += ["", f"Best kept: {state['best_metric'] * 100:.2f} at {state.get('best_model_checkpoint')}."]
    return lines


def _result_lines(path: str) -> list[str]:
    payload = _json(path)
    if payload is None:
        raise SimCSEError(f"`card_results` {path!r} does not exist; give an evaluation.py `output_json` file or a "
                          "multiseed.json")
    name = os.path.basename(path)
    if "summary" in payload and "seeds" in payload:  # multiseed.json
        rows = [[column, f"{stats['mean']:.2f}" + (f" ± {stats['std']:.2f}" if stats.get("std") is not None else ""),
                 stats["n"]] for column, stats in payload["summary"].items()]
        return [f"Over seeds {', '.join(map(str, payload['seeds']))} ({name}; mean ± sample std):", "",
                *_table(["task", "score", "seeds"], rows)]
    if "tables" in payload:  # evaluation.py --output_json
        lines = [f"{payload.get('mode', '')} evaluation, pooler {payload.get('pooler')} ({name}):"]
        for kind, table in payload["tables"].items():
            if kind == "custom_retrieval":
                for dataset, metrics in table.items():
                    lines += ["", f"Retrieval, {dataset}:", "", *_table(list(metrics), [list(metrics.values())])]
            elif isinstance(table, dict) and all(isinstance(v, (int, float)) for v in table.values()):
                lines += ["", f"{kind}:", "", *_table(list(table), [[f"{v:.2f}" for v in table.values()]])]
        return lines
    raise SimCSEError(f"`card_results` {path!r} is neither an evaluation.py `output_json` file nor a multiseed.json")


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return NOT_RECORDED


def model_card(checkpoint: str, results: Sequence[str] = ()) -> str:
    """The README.md text of the export of training checkpoint ``checkpoint`` (see the module docstring)."""
    config = _json(os.path.join(checkpoint, "config.json")) or {}
    facts = _json(os.path.join(checkpoint, RUN_FACTS)) or {}
    state = _json(os.path.join(checkpoint, "trainer_state.json"))
    fact = lambda key: facts.get(key, NOT_RECORDED)  # noqa: E731
    loss = config.get("simcse_loss") or {}
    hparams = ", ".join(f"{k}={v}" for k, v in sorted(loss.items()) if k != "name") or "none"
    lora = config.get("simcse_lora")
    base = fact("base_model")
    steps = facts.get("steps", (state or {}).get("global_step", NOT_RECORDED))  # trainer_state for older runs
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags: [sentence-transformers, sentence-similarity, simcse]",
             *([f"base_model: {base}"] if base != NOT_RECORDED else []), "---", "",
             f"# {os.path.basename(os.path.abspath(checkpoint))}", "",
             "A sentence encoder trained with contrastive learning (SimCSE, arXiv:2104.08821) and exported to "
             "sentence-transformers.", "", "## Model", "",
             *_table(["", ""], [["base model", base], ["architecture", ", ".join(config.get("architectures") or [])
                                                      or NOT_RECORDED],
                                ["embedding width", next((config[k] for k in ("hidden_size", "n_embd", "dim", "d_model")
                                                     if k in config), NOT_RECORDED)],
                                ["pooler", config.get("pooler_type", NOT_RECORDED)
                                 + (" (MLP head in training only)" if config.get("mlp_only_train") else "")],
                                ["bidirectional decoder", "yes" if config.get("is_causal") is False else "-"],
                                ["LoRA (merged in this export)",
                                 f"r={lora['r']}, alpha={lora['alpha']}, on {','.join(lora['target_modules'])}"
                                 if lora else "-"],
                                ["prompts", json.dumps(config.get("simcse_prompts")) if config.get("simcse_prompts")
                                 else "-"]]),
             "", "## Training", "",
             *_table(["", ""], [["loss", loss.get("name", NOT_RECORDED)], ["loss hyperparameters", hparams],
                                ["training file", fact("train_file")], ["examples", fact("train_examples")],
                                ["steps", steps], ["global batch", fact("global_batch")],
                                ["learning rate", fact("learning_rate")],
                                ["max sequence length", fact("max_seq_length")],
                                ["seed", fact("seed")]]),
             "", "## Evaluation", "", *_dev_rows(state)]
    for path in results:
        lines += ["", *_result_lines(path)]
    versions = facts.get("versions") or {}
    lines += ["", "## Libraries", "",
              "Training: " + (", ".join(f"{k} {v}" for k, v in versions.items()) or NOT_RECORDED) + ".",
              f"Export: sentence-transformers {_installed('sentence-transformers')}, transformers "
              f"{_installed('transformers')}.", "", "## Usage", "", "```python",
              "from sentence_transformers import SentenceTransformer", "",
              "model = SentenceTransformer(\"path/to/this/folder\")",
              "embeddings = model.encode([\"A man is playing a guitar.\", \"Someone plays an instrument.\"])", "```",
              "", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def check_results(results: Sequence[str]) -> None:
    """Read every ``--card_results`` file now, so a bad one fails before anything is written."""
    for path in results:
        _result_lines(path)


def write_model_card(checkpoint: str, model_dir: str, results: Sequence[str] = ()) -> str:
    """Write :func:`model_card` to ``<model_dir>/README.md`` (atomically); returns its path."""
    path = os.path.join(model_dir, "README.md")
    atomic_write_text(path, model_card(checkpoint, results))
    return path
