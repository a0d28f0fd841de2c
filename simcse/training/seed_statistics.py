"""Scores and statistics of a multi-seed run (:mod:`simcse.training.multiseed`): the unrounded figures of
evaluation.py's tables, mean ± std and the 95% Student-t interval per column, the paired comparison of two
recipes on the same seeds (paired t-test, scipy's ``ttest_rel``), and their tables.

Imports: the foundation only.
"""

from __future__ import annotations

import json
import math
import statistics

from prettytable import PrettyTable

from simcse.errors import SimCSEError


def unrounded_scores(payload: dict) -> dict[str, float]:
    """The figures evaluation.py prints (same columns), before rounding: STS Spearman ×100 of the split and
    aggregation it reports, transfer accuracy, and each table's ``Avg.`` as the mean of these."""
    results, mode, agg = payload["results"], payload["mode"], payload.get("sts_agg", "all")
    tables = payload["tables"]
    columns: dict[str, dict[str, float]] = {}
    if "sts" in tables:
        sts = {}
        for task in (t for t in tables["sts"] if t != "Avg."):
            result = results[task]
            if mode == "dev":
                value = result["dev"]["spearman"]
            elif "all" in result:  # STS12-16: the aggregation over subsets
                value = result["all"]["spearman"][agg]
            else:  # STS-B, SICK-R: their test split
                value = result["test"]["spearman"]
            sts[task] = 100 * float(value)
        columns["sts"] = sts
    if "transfer" in tables:
        key = "devacc" if mode == "dev" else "acc"
        columns["transfer"] = {t: float(results[t][key]) for t in tables["transfer"] if t != "Avg."}
    for name, values in columns.items():
        if "Avg." in tables[name]:
            values["Avg."] = statistics.fmean(values.values())
    if len(columns) == 2:  # both tables have an Avg.
        return {f"{k} ({name})" if k == "Avg." else k: v for name, values in
                (("STS", columns["sts"]), ("transfer", columns["transfer"])) for k, v in values.items()}
    return next(iter(columns.values()), {})


def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided Student t quantile t((1 + level) / 2, df)."""
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, df))


def summarize(per_seed: dict[int, dict[str, float]]) -> dict[str, dict]:
    """{column: {"mean", "std", "n", "ci95"}} over the seeds from the unrounded values: sample std (ddof 1)
    and the t-interval of the mean; std and ci95 are None for a single seed (no spread to estimate)."""
    columns = list(dict.fromkeys(c for row in per_seed.values() for c in row))
    summary = {}
    for column in columns:
        values = [row[column] for row in per_seed.values() if column in row]
        mean = statistics.fmean(values)
        if len(values) > 1:
            std = statistics.stdev(values)
            half = t_quantile(len(values) - 1) * std / math.sqrt(len(values))
            summary[column] = {"mean": mean, "std": std, "n": len(values), "ci95": [mean - half, mean + half]}
        else:
            summary[column] = {"mean": mean, "std": None, "n": 1, "ci95": None}
    return summary


def render(per_seed: dict[int, dict[str, float]], summary: dict[str, dict]) -> str:
    table = PrettyTable()
    table.field_names = ["seed", *summary]
    for seed, row in per_seed.items():
        table.add_row([str(seed), *(f"{row[c]:.2f}" if c in row else "-" for c in summary)])
    table.add_row(["mean ± std", *(f"{s['mean']:.2f} ± {s['std']:.2f}" if s["n"] > 1 else f"{s['mean']:.2f} (n=1)"
                                   for s in summary.values())])
    table.add_row(["95% CI", *(f"[{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]" if s["n"] > 1 else "n/a (n=1)"
                               for s in summary.values())])
    return table.get_string()


def summary_title(mode: str, seeds: int) -> str:
    if seeds == 1:
        return f"------ {mode}: 1 seed (n=1: no spread or interval; run more seeds) ------"
    return (f"------ {mode}: {seeds} seeds, mean ± std (sample std, ddof 1), 95% CI of the mean "
            f"(t, {seeds - 1} df) ------")


def paired_comparison(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]) -> dict[str, dict]:
    """A - B per column over the seeds both hold: {"n", "mean_diff", "std_diff", "ci95", "t", "p"}; the
    paired t-test (p two-sided; equal to scipy.stats.ttest_rel). std/ci95/t/p are None with one pair."""
    from scipy.stats import t as student_t

    seeds = [s for s in a if s in b]
    if not seeds:
        raise SimCSEError(f"no seed in common (A: {sorted(a)}, B: {sorted(b)}); a paired comparison needs the "
                          "same seeds in both runs")
    columns = [c for c in dict.fromkeys(c for s in seeds for c in a[s]) if all(c in a[s] and c in b[s] for s in seeds)]
    comparison = {}
    for column in columns:
        diffs = [a[s][column] - b[s][column] for s in seeds]
        n, mean = len(diffs), statistics.fmean(diffs)
        entry = {"n": n, "seeds": seeds, "mean_diff": mean, "std_diff": None, "ci95": None, "t": None, "p": None}
        if n > 1:
            std = statistics.stdev(diffs)
            half = t_quantile(n - 1) * std / math.sqrt(n)
            t_value = mean / (std / math.sqrt(n)) if std > 0 else (math.copysign(math.inf, mean) if mean else math.nan)
            p = 2 * float(student_t.sf(abs(t_value), n - 1)) if not math.isnan(t_value) else math.nan
            entry.update(std_diff=std, ci95=[mean - half, mean + half], t=t_value, p=p)
        comparison[column] = entry
    return comparison


def render_comparison(comparison: dict[str, dict], name_a: str, name_b: str) -> str:
    table = PrettyTable()
    table.field_names = ["column", "seeds", f"mean diff ({name_a} - {name_b})", "95% CI", "paired t p-value"]
    for column, c in comparison.items():
        if c["n"] > 1:
            table.add_row([column, c["n"], f"{c['mean_diff']:+.2f}", f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]",
                           f"{c['p']:.3g}"])
        else:
            table.add_row([column, 1, f"{c['mean_diff']:+.2f}", "n/a (n=1)", "n/a (n=1)"])
    return table.get_string()


def read_per_seed(path: str) -> dict[int, dict[str, float]]:
    """The unrounded per-seed scores of a multiseed.json."""
    try:
        with open(path, encoding="utf-8") as handle:
            runs = json.load(handle)["runs"]
        return {int(seed): {k: float(v) for k, v in run["scores"].items()} for seed, run in runs.items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SimCSEError(f"{path!r} is not a multiseed.json written by python -m simcse.training.multiseed "
                          f"({err})") from None
