"""Train every registered loss from one start, three seeds each, and compare them on the STS test suite.

    python bench/compare_losses.py [--losses infonce,dcl,cosent] [--seeds 42,43,44] [--steps 100]
                                   [--output_dir result/compare_losses]

The start is the [CLS] vector of a model trained with mean pooling (``--model``, default
paraphrase-MiniLM-L3-v2, ``--pooler_type cls --mlp_only_train``, evaluated with ``cls_before_pooler``),
where the [CLS] vector is not yet a sentence embedding, so the loss has something to move. Each loss trains
with its registry defaults (the recommended hyperparameters of its paper) on the data it is made for:

* plain-sentence losses (SimCSE-style, two dropout views): the wiki1m sample (``--train_file``);
* graded losses (cosent, angle): STS-B train as scored pairs (written by :mod:`simcse.data.prepare`);
* guided losses (gist): the wiki1m sample, guided by the start model with its own mean pooling
  (``--guide_model``, default the start model, ``--guide_pooler avg``).

Each (loss, seed) run ends with the STS test suite (as ``evaluation.py --mode test --task_set sts``) on the
final model and with retrieval: nDCG@10 on three proxy retrieval sets built once from local data
(:mod:`simcse.evaluation.proxy_sets`: STS-B test, SICK-R test, and the NLI file's test half, under
``<output_dir>/proxy/``; not BEIR: they rank models, not compare with published numbers); its result is
written to ``<output_dir>/results/<loss>-seed<S>.json`` as soon as it completes, and a rerun skips every
(loss, seed) whose result exists (so the table can be built over several sittings; delete a result file to
redo it). A result written before the retrieval columns existed is completed: from
the model kept by ``--keep_models`` when it is there, else by training that (loss, seed) again (the runs are
deterministic; the retrained STS average is checked against the stored one). After each run the summary is
rewritten:

* ``compare_losses.md``: per loss, mean ± sample standard deviation over the seeds of the 7-task STS
  average and of STS-B test, the data it trained on, and the verdict against the reference loss
  (``--reference``, default infonce): ``>`` or ``<`` when the two mean ± std intervals do not overlap,
  then the mean ± std of the proxies' nDCG@10 (their average, and each proxy's mean),
  ``≈`` when they do (with 3 seeds this is a coarse rule: it says where the spread cannot explain a
  difference, not a significance level);
* ``compare_losses.json``: every per-seed result;
* ``compare_losses.png``: mean ± std per loss with the seeds as dots.

It prints the total compute time of the results it holds (those of earlier sittings included). Sittings
on disjoint ``--losses`` may run at the same time into one ``--output_dir`` (for instance two processes with
``OMP_NUM_THREADS=1`` on two cores); a last run naming every loss then only summarises.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from pathlib import Path

from bench_defaults import default_model

from senteval.datapath import resolve_data_dir, shared_dir
from simcse.data.prepare import read_stsb_pairs, write_scored_pairs
from simcse.evaluation.proxy_sets import build_proxy_set
from simcse.evaluation.report import EvaluationConfig, evaluate
from simcse.evaluation.retrieval import RetrievalEvaluator
from simcse.files import atomic_write_text
from simcse.losses import LOSSES
from simcse.training.arguments import make_train_args
from simcse.training.run import train_model


def data_kind(loss: str) -> str:
    cls = LOSSES[loss]
    return "stsb-train" if cls.needs_scores else ("wiki+guide" if cls.needs_guide else "wiki")


def sts_suite(model: str, data: str) -> dict[str, float]:
    """The STS test table (Spearman x 100, "all" aggregation) of ``model`` with its [CLS] state."""
    return evaluate(EvaluationConfig(model_name_or_path=model, pooler="cls_before_pooler", task_set="sts",
                                     mode="test", senteval_data=data))["tables"]["sts"]


PROXIES = ("stsb", "sickr", "nli")  # the proxy retrieval sets (test split) every final model is scored on


def proxy_folders(out: Path, data: str, nli_file: str) -> dict[str, str]:
    """``{name: folder}`` of the proxy retrieval sets, built under ``out/proxy`` at the first sitting."""
    folders = {}
    for source in PROXIES:
        folder = out / "proxy" / f"{source}-test"
        if not (folder / "README.txt").is_file():  # written last: a folder without it is incomplete
            sources = {"input_path": nli_file} if source == "nli" else {"data_dir": data}
            build_proxy_set(source, "test", folder, overwrite=folder.exists(), **sources)
        folders[f"{source}_proxy"] = str(folder)
    return folders


def retrieval_scores(model: str, folders: dict[str, str]) -> dict[str, float]:
    """nDCG@10 x 100 of ``model``'s [CLS] state on each proxy retrieval set."""
    from simcse.modeling.encoder import build_encoder

    encoder = build_encoder(model, "cls_before_pooler")
    return {name: 100 * RetrievalEvaluator(folder, name=name)(encoder)[f"{name}_ndcg@10"]
            for name, folder in folders.items()}


def with_retrieval(result: dict, retrieval: dict[str, float]) -> dict:
    return {**result, "retrieval": retrieval, "retrieval_avg": sum(retrieval.values()) / len(retrieval)}


def run_one(loss: str, seed: int, args, data: str, files: dict[str, str], folders: dict[str, str]) -> dict:
    """Train one (loss, seed) and evaluate it; the run directory is scratch (removed afterwards unless
    ``--keep_models``)."""
    out = Path(args.output_dir) / "runs" / f"{loss}-seed{seed}"
    kind = data_kind(loss)
    extra = {"guide_model": args.guide_model, "guide_pooler": "avg"} if kind == "wiki+guide" else {}
    started = time.perf_counter()
    train_model(*make_train_args(
        model_name_or_path=args.model, train_file=files["stsb-train" if kind == "stsb-train" else "wiki"],
        output_dir=str(out), overwrite_output_dir=True, loss_type=loss, pooler_type="cls", mlp_only_train=True,
        learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size, max_seq_length=32,
        max_steps=args.steps, eval_strategy="no", save_strategy="no", logging_steps=max(1, args.steps // 4),
        seed=seed, report_to="none", disable_tqdm=True, dataloader_drop_last=True, **extra,
    ))
    train_seconds = time.perf_counter() - started
    suite = sts_suite(str(out), data)
    retrieval = retrieval_scores(str(out), folders)
    hparams = json.loads((out / "config.json").read_text())["simcse_loss"]
    hparams.pop("name")
    if not args.keep_models:
        shutil.rmtree(out)  # the scores are the result; the weights of 3 x every loss would fill the disk
    return with_retrieval({"loss": loss, "seed": seed, "data": kind, "hparams": hparams, "steps": args.steps,
                           "batch_size": args.batch_size, "learning_rate": args.learning_rate, "model": args.model,
                           "sts": suite, "sts_avg": suite["Avg."], "stsb_test": suite["STSBenchmark"],
                           "train_seconds": round(train_seconds, 1),
                           "seconds": round(time.perf_counter() - started, 1)}, retrieval)


def complete_retrieval(done: dict, args, data: str, files: dict[str, str], folders: dict[str, str]) -> dict:
    """A result from before the retrieval columns: score the kept model, or train the run again (it is
    deterministic) and check it reproduces the stored STS average."""
    kept = Path(args.output_dir) / "runs" / f"{done['loss']}-seed{done['seed']}"
    if (kept / "config.json").is_file():
        return with_retrieval(done, retrieval_scores(str(kept), folders))
    again = run_one(done["loss"], done["seed"], args, data, files, folders)
    if abs(again["sts_avg"] - done["sts_avg"]) > 0.01:
        print(f"warning: {done['loss']} seed {done['seed']} retrained to STS avg {again['sts_avg']:.2f}, "
              f"stored {done['sts_avg']:.2f}: the stored STS scores are kept", flush=True)
    return {**with_retrieval(done, again["retrieval"]), "seconds": done["seconds"] + again["seconds"]}


def result_path(out: Path, loss: str, seed: int) -> Path:
    return out / "results" / f"{loss}-seed{seed}.json"


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def verdict(a: tuple[float, float], b: tuple[float, float]) -> str:
    """'>' / '<' when the mean ± std intervals of a and b do not overlap, '≈' when they do, '?' without a
    spread (one seed)."""
    (ma, sa), (mb, sb) = a, b
    if math.isnan(sa) or math.isnan(sb):
        return "?"
    if ma - sa > mb + sb:
        return ">"
    if ma + sa < mb - sb:
        return "<"
    return "≈"


def summarize(results: list[dict], reference: str) -> list[dict]:
    by_loss: dict[str, list[dict]] = {}
    for r in results:
        by_loss.setdefault(r["loss"], []).append(r)
    rows = []
    for loss, runs in by_loss.items():
        scored = [r for r in runs if "retrieval" in r]
        rows.append({"loss": loss, "data": runs[0]["data"], "hparams": runs[0]["hparams"],
                     "seeds": sorted(r["seed"] for r in runs), "sts_avg": mean_std([r["sts_avg"] for r in runs]),
                     "stsb_test": mean_std([r["stsb_test"] for r in runs]),
                     "retrieval_avg": mean_std([r["retrieval_avg"] for r in scored]) if scored else None,
                     "retrieval": {name: mean_std([r["retrieval"][name] for r in scored])[0]
                                   for name in (scored[0]["retrieval"] if scored else {})},
                     "values": [r["sts_avg"] for r in runs]})
    rows.sort(key=lambda row: -row["sts_avg"][0])
    ref = next((row for row in rows if row["loss"] == reference), None)
    for row in rows:
        row["vs_reference"] = "-" if ref is None or row is ref else verdict(row["sts_avg"], ref["sts_avg"])
    return rows


def markdown(rows: list[dict], args, start: dict | None, total_seconds: float, reference: str) -> str:
    fmt = lambda ms: f"{ms[0]:.2f} ± {ms[1]:.2f}" if not math.isnan(ms[1]) else f"{ms[0]:.2f}"  # noqa: E731
    lines = [
        f"Start: `{Path(args.model).name}` [CLS] (`--pooler_type cls --mlp_only_train`, evaluated with "
        f"`cls_before_pooler`); {args.steps} steps of batch {args.batch_size}, lr {args.learning_rate}, max length 32; "
        f"each loss with its registry defaults. STS avg: the 7-task STS test average (STS12-16 'all', STS-B, "
        f"SICK-R), mean ± sample std over the seeds; vs {reference}: '>'/'<' where the mean ± std intervals do "
        f"not overlap, '≈' where they do. {platform.machine()} CPU; total compute (the runs' wall time summed) "
        f"{total_seconds / 60:.1f} min.",
        "",
    ]
    if start is not None:
        retrieval = (f", retrieval nDCG@10 {start['retrieval_avg']:.2f} ("
                     + " / ".join(f"{name} {value:.2f}" for name, value in start["retrieval"].items()) + ")"
                     if "retrieval" in start else "")
        lines += [f"Start model, no training: STS avg {start['sts_avg']:.2f}, STS-B test {start['stsb_test']:.2f}"
                  f"{retrieval}.", ""]
    proxies = [f"{source}_proxy" for source in PROXIES]
    header = ["loss", "data", "seeds", "STS avg", "STS-B test", f"vs {reference}", "retrieval nDCG@10", *proxies,
              "hyperparameters"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        hp = ", ".join(f"{k}={v}" for k, v in row["hparams"].items())
        retrieval = fmt(row["retrieval_avg"]) if row["retrieval_avg"] else "-"
        each = " | ".join(f"{row['retrieval'][p]:.2f}" if p in row["retrieval"] else "-" for p in proxies)
        lines.append(f"| {row['loss']} | {row['data']} | {len(row['seeds'])} | {fmt(row['sts_avg'])} | "
                     f"{fmt(row['stsb_test'])} | {row['vs_reference']} | {retrieval} | {each} | {hp} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], start: dict | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(rows) + 2), 4))
    for i, row in enumerate(rows):
        mean, std = row["sts_avg"]
        ax.errorbar(i, mean, yerr=0 if math.isnan(std) else std, fmt="o", capsize=4, color="C0")
        ax.scatter([i] * len(row["values"]), row["values"], color="C1", s=12, zorder=3)
    if start is not None:
        ax.axhline(start["sts_avg"], color="gray", linestyle="--", label="start (no training)")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(rows)), [row["loss"] for row in rows], rotation=45, ha="right")
    ax.set_ylabel("STS avg (7 tasks, test) x 100")
    ax.set_title("every loss from the same start\nmean ± std over seeds (dots: seeds)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_summary(out: Path, losses: list[str], args, start: dict) -> tuple[list[dict], float]:
    """Rewrite compare_losses.{md,json,png} from every result on disk for ``losses``; return the rows and
    the total compute seconds of those results."""
    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*-seed*.json"))]
    results = [r for r in results if r["loss"] in losses]
    total = sum(r["seconds"] for r in results)
    rows = summarize(results, args.reference)
    atomic_write_text(out / "compare_losses.md", markdown(rows, args, start, total, args.reference))
    atomic_write_text(out / "compare_losses.json", json.dumps({"start": start, "results": results}, indent=2) + "\n")
    plot(rows, start, out / "compare_losses.png")
    return rows, total


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: ../shared/models/paraphrase-MiniLM-L3-v2")
    parser.add_argument("--train_file", default=None, help="plain sentences; default: the wiki1m sample")
    parser.add_argument("--guide_model", default=None, help="guide of gist; default: the start model (mean pooling)")
    parser.add_argument("--senteval_data", default=None)
    parser.add_argument("--losses", default=",".join(sorted(LOSSES)), help="comma-separated registry names")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=3e-5)
    parser.add_argument("--reference", default="infonce", help="the loss every other is compared with")
    parser.add_argument("--output_dir", default="result/compare_losses")
    parser.add_argument("--nli_file", default=None,
                        help="SimCSE's NLI csv for the NLI retrieval proxy; default: ../shared/data/train's")
    parser.add_argument("--keep_models", action="store_true", help="keep each run's final model under runs/")
    args = parser.parse_args(argv)
    from simcse.training.demo import default_train_file

    args.model = args.model or default_model()
    args.guide_model = args.guide_model or args.model
    args.train_file = args.train_file or default_train_file()
    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    unknown = [name for name in losses if name not in LOSSES]
    if unknown:
        parser.error(f"unknown loss(es) {unknown}; registered: {', '.join(sorted(LOSSES))}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: write comma-separated integers, e.g. 42,43,44")
    data = str(resolve_data_dir(args.senteval_data))
    out = Path(args.output_dir)
    if args.nli_file is None:
        shared = shared_dir()
        args.nli_file = str(shared / "data" / "train" / "nli_snli_devtest_for_simcse.csv") if shared else None
    if not args.nli_file or not Path(args.nli_file).is_file():
        parser.error(f"--nli_file {args.nli_file!r} does not exist; give SimCSE's NLI csv (sent0,sent1,hard_neg)")
    folders = proxy_folders(out, data, args.nli_file)
    files = {"wiki": args.train_file, "stsb-train": str(out / "stsb-train-scored.csv")}
    if any(data_kind(loss) == "stsb-train" for loss in losses) and not Path(files["stsb-train"]).is_file():
        source = Path(data) / "downstream" / "STS" / "STSBenchmark" / "sts-train.csv"
        write_scored_pairs(read_stsb_pairs(source), files["stsb-train"])

    settings = {"model": args.model, "steps": args.steps, "batch_size": args.batch_size,
                "learning_rate": args.learning_rate}
    start_file = out / "results" / "start.json"
    if not start_file.is_file():  # the start model's own score, once
        suite = sts_suite(args.model, data)
        atomic_write_text(start_file, json.dumps({"model": args.model, "sts_avg": suite["Avg."],
                                             "stsb_test": suite["STSBenchmark"], "sts": suite}, indent=2) + "\n")
    start = json.loads(start_file.read_text())
    if "retrieval" not in start:  # the start model's retrieval, once (also for a start.json of before)
        start = with_retrieval(start, retrieval_scores(args.model, folders))
        atomic_write_text(start_file, json.dumps(start, indent=2) + "\n")

    sitting = time.perf_counter()
    for loss in losses:
        for seed in seeds:
            path = result_path(out, loss, seed)
            if path.is_file():
                done = json.loads(path.read_text())
                mismatch = {k: (done.get(k), v) for k, v in settings.items() if done.get(k) != v}
                if mismatch:
                    raise SystemExit(f"{path} was computed with other settings {mismatch}; use another "
                                     "--output_dir or delete it")
                if "retrieval" not in done:
                    print(f"=== {loss} seed {seed}: done earlier, adding retrieval", flush=True)
                    done = complete_retrieval(done, args, data, files, folders)
                    atomic_write_text(path, json.dumps(done, indent=2) + "\n")
                    write_summary(out, losses, args, start)
                print(f"=== {loss} seed {seed}: done ({done['sts_avg']:.2f})", flush=True)
                continue
            print(f"=== {loss} seed {seed}", flush=True)
            atomic_write_text(path, json.dumps(run_one(loss, seed, args, data, files, folders), indent=2) + "\n")
            write_summary(out, losses, args, start)  # an interrupted sitting leaves a current table

    rows, total = write_summary(out, losses, args, start)
    print((out / "compare_losses.md").read_text())
    print(f"total compute time of these results: {total / 60:.1f} min (this sitting: "
          f"{(time.perf_counter() - sitting) / 60:.1f} min)")
    print("wrote", out / "compare_losses.md", out / "compare_losses.json", out / "compare_losses.png")
    return rows


if __name__ == "__main__":
    main()
