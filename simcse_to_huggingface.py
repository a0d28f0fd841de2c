"""Convert a SimCSE training checkpoint (ours or the original code's) into a plain Hugging Face model.

    python simcse_to_huggingface.py --path result/my-sup-simcse [--output_dir result/my-sup-simcse-hf]

Parses the flags, calls :func:`simcse.modeling.convert.convert` (which documents the key mapping) and prints
what it wrote.
"""

from __future__ import annotations

import argparse
import os
import sys

from transformers import AutoConfig

from simcse.cli import OneLineArgumentParser, run_cli
from simcse.errors import SimCSEError
from simcse.inference import card, export
from simcse.modeling.convert import convert


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineArgumentParser(prog="simcse_to_huggingface.py", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="checkpoint directory written by train.py")
    parser.add_argument("--output_dir", default=None, help="where to write the plain model (default: PATH-hf)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    parser.add_argument("--sentence_transformers", action="store_true",
                        help="also write the sentence-transformers layout (modules.json, pooling, MLP head as Dense)")
    parser.add_argument("--max_seq_length", type=int, default=export.DEFAULT_MAX_SEQ_LENGTH,
                        help="with --sentence_transformers: truncation length it uses (default: %(default)s)")
    parser.add_argument("--card_results", nargs="+", default=(), metavar="FILE",
                        help="with --sentence_transformers: evaluation.py --output_json files or multiseed.json "
                             "files whose tables go on the model card (README.md)")
    args = parser.parse_args(argv)
    if args.card_results and not args.sentence_transformers:
        raise SimCSEError("--card_results goes on the model card of the sentence-transformers export; "
                          "add --sentence_transformers")
    card.check_results(args.card_results)
    output_dir = args.output_dir or args.path.rstrip("/") + "-hf"
    if args.sentence_transformers and os.path.isfile(os.path.join(args.path, "config.json")):
        source = AutoConfig.from_pretrained(args.path)  # fail before writing anything
        export.export_pooler(source, args.path)
        export.check_max_seq_length(args.max_seq_length, source, args.path)
    report = convert(args.path, output_dir, overwrite=args.overwrite)
    dropped = f"; dropped {len(report['dropped'])} head tensors" if report["dropped"] else ""
    print(f"wrote {report['architecture']} ({report['keys']} tensors{dropped}) to {report['output_dir']}")
    if args.sentence_transformers:
        report["sentence_transformers"] = export.write_sentence_transformers(output_dir, args.max_seq_length)
        st = report["sentence_transformers"]
        print(f"wrote the sentence-transformers layout ({' -> '.join(st['modules'])}; pooler {st['pooler']})")
        report["model_card"] = card.write_model_card(args.path, output_dir, args.card_results)
        print(f"wrote the model card {report['model_card']}")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="simcse_to_huggingface.py"))
