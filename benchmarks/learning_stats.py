# Copyright 2026 the trl_ext developers. Apache-2.0.
"""Statistics, diagnostics and plots of the multi-seed learning benchmark (``bench_learning.py``).

Pure functions over the per-run JSON records; no training here.

- :func:`t_interval`: mean ± ``t_{0.975, n-1} · s / √n`` over seeds (Student t interval; ``s`` the sample standard
  deviation), with min and max.
- :func:`compare`: the difference of two methods at one wall-time mark, paired by seed (``d_k = a_k − b_k``, paired
  t-test and its t interval) and unpaired (Welch's t-test).
- :func:`step_diagnostics`: how process supervision sees the greedy held-out completions: steps per completion,
  arithmetic claims per completion, and the fraction of verified-correct steps in wrong and in right answers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict:
    """``{"n", "mean", "sd", "lo", "hi", "min", "max"}``: the Student t interval of the mean of ``values``.

    ``lo, hi = mean ∓ t_{(1+confidence)/2, n−1} · sd / √n`` with ``sd`` the sample standard deviation (n − 1). With one
    value the interval is undefined (``lo = hi = None``).

    Example:
        >>> r = t_interval([0.3, 0.4, 0.5])   # sd = 0.1, t_{0.975, 2} = 4.303
        >>> round(r["mean"], 3), round(r["lo"], 3), round(r["hi"], 3)
        (0.4, 0.152, 0.648)
    """
    from scipy import stats

    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "lo": None, "hi": None, "min": None, "max": None}
    mean = statistics.fmean(values)
    out = {"n": n, "mean": mean, "sd": None, "lo": None, "hi": None, "min": min(values), "max": max(values)}
    if n > 1:
        sd = statistics.stdev(values)
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
        out.update(sd=sd, lo=mean - half, hi=mean + half)
    return out


def compare(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> dict:
    """Method ``a`` vs ``b`` (``{seed: value}``): paired-by-seed difference and Welch's unpaired test.

    Paired: over the seeds both have, ``d = a − b``, its t interval and the paired t-test p-value (``ttest_rel``).
    Welch: ``ttest_ind(equal_var=False)`` over all values of each. p-values are ``None`` with fewer than 2 values, or
    when every difference is the same (zero variance).
    """
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    paired = t_interval(diffs, confidence)
    p_paired = p_welch = None
    if len(seeds) > 1 and paired["sd"]:
        p_paired = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    va, vb = list(a.values()), list(b.values())
    if len(va) > 1 and len(vb) > 1 and (statistics.stdev(va) or statistics.stdev(vb)):
        p_welch = float(stats.ttest_ind(va, vb, equal_var=False).pvalue)
    return {"seeds": seeds, "diff": paired, "p_paired": p_paired, "p_welch": p_welch}


def verdict(result: dict, alpha: float = 0.05) -> str:
    """One sentence on what a :func:`compare` result allows one to conclude."""
    d, n = result["diff"], result["diff"]["n"]
    if n < 2 or d["lo"] is None:
        return f"{n} paired seed(s): no interval, nothing can be concluded"
    text = f"difference {d['mean']:+.3f}, 95% CI [{d['lo']:+.3f}, {d['hi']:+.3f}] over {n} paired seeds"
    p = result["p_paired"]
    if p is not None:
        text += f", paired p = {p:.3f}"
    if result["p_welch"] is not None:
        text += f", Welch p = {result['p_welch']:.3f}"
    if d["lo"] > 0 or d["hi"] < 0:
        return text + f": significant at {alpha:.0%} (the interval excludes 0)"
    return (text + f": not significant; any difference inside the interval (0 included) is compatible with these "
                   f"{n} seeds, so neither a difference nor its absence is shown")


def step_diagnostics(texts: Sequence[str], scores: Sequence[float | None], verifier, separator: str = "\n") -> dict:
    """What the arithmetic step verifier finds in ``texts`` (graded ``scores``: 1 right, else wrong).

    Returns ``steps_per_completion`` (non-empty pieces between separators), ``claims_per_completion`` (steps the
    verifier scores), ``correct_step_frac_wrong`` / ``correct_step_frac_right`` (over scored steps of the wrong /
    right answers: the mean step score, i.e. the fraction of true claims) and the counts behind them.

    Example:
        >>> from trl_ext.rewards.process import ArithmeticStepVerifier
        >>> d = step_diagnostics(["1+1=2\\n2+2=5\\n#### 5", "3+4=7\\n#### 7"], [0.0, 1.0], ArithmeticStepVerifier())
        >>> d["steps_per_completion"], d["claims_per_completion"], d["correct_step_frac_wrong"]
        (2.5, 1.5, 0.5)
    """
    from trl_ext.rewards.process import split_step_spans

    steps = claims = 0
    step_scores: dict[bool, list[float]] = {True: [], False: []}
    for text, score in zip(texts, scores):
        pieces = [text[a:b] for a, b in split_step_spans(text, separator)]
        steps += len(pieces)
        right = score is not None and score >= 1.0
        for piece in pieces:
            s = verifier.score_step(piece)
            if s is not None:
                claims += 1
                step_scores[right].append(s)
    n = max(1, len(texts))

    def frac(values: list[float]) -> float | None:
        return statistics.fmean(values) if values else None

    return {"steps_per_completion": steps / n, "claims_per_completion": claims / n,
            "correct_step_frac_wrong": frac(step_scores[False]), "correct_step_frac_right": frac(step_scores[True]),
            "scored_steps_wrong": len(step_scores[False]), "scored_steps_right": len(step_scores[True]),
            "wrong_answers": sum(1 for s in scores if s is None or s < 1.0)}


# ---- aggregation over the run records ------------------------------------------------------------------------------


def curve_values(records: Sequence[dict], metric: str) -> list[dict[int, float]]:
    """Per evaluation mark ``i``: ``{seed: value}`` of ``metric`` over the complete runs of one method."""
    marks = min((len(r["curve"]) for r in records), default=0)
    out = []
    for i in range(marks):
        out.append({r["seed"]: r["curve"][i][metric] for r in records
                    if r["curve"][i].get(metric) is not None})
    return out


def summarize_cell(cell: dict, records: dict[str, list[dict]]) -> dict:
    """Mean/interval per method and mark, and every pairwise comparison at the last mark, for each metric."""
    summary = {"cell": cell["name"], "title": cell["title"], "metrics": {}, "comparisons": []}
    for metric in cell["metrics"]:
        per_method = {}
        for method, recs in records.items():
            values = curve_values(recs, metric)
            if not values:
                continue
            seconds = [statistics.fmean(r["curve"][i]["train_seconds"] for r in recs) for i in range(len(values))]
            steps = [statistics.fmean(r["curve"][i].get("step", 0) for r in recs) for i in range(len(values))]
            per_method[method] = {"train_seconds": seconds, "steps": steps,
                                  "marks": [t_interval(v.values()) for v in values], "last": values[-1]}
        summary["metrics"][metric] = {m: {k: v for k, v in d.items() if k != "last"} for m, d in per_method.items()}
        methods = list(per_method)
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                result = compare(per_method[a]["last"], per_method[b]["last"])
                summary["comparisons"].append({"metric": metric, "a": a, "b": b, **result,
                                               "verdict": verdict(result)})
    return summary


def _fmt(r: dict) -> str:
    if r["mean"] is None:
        return "–"
    ci = f" ± {(r['hi'] - r['lo']) / 2:.3f}" if r["lo"] is not None else ""
    return f"{r['mean']:.3f}{ci} [{r['min']:.3f}–{r['max']:.3f}]"


def markdown(summary: dict, labels: dict[str, str]) -> str:
    """The cell's table (mean ± 95% t half-width [min–max] at t = 0 and at the last mark) and its verdicts."""
    lines = [f"### {summary['title']}", ""]
    for metric, per_method in summary["metrics"].items():
        if not per_method:
            continue
        lines += [f"**{metric}** (mean ± 95% t half-width [min–max] over seeds)", "",
                  "| method | seeds | train s | optimizer steps | at t = 0 | at the end of the budget |",
                  "|---|---|---|---|---|---|"]
        for method, d in per_method.items():
            steps = d.get("steps", [None])[-1]
            lines.append(f"| {labels.get(method, method)} | {d['marks'][-1]['n']} | {d['train_seconds'][-1]:.0f} | "
                         f"{'–' if steps is None else f'{steps:.1f}'} | {_fmt(d['marks'][0])} | "
                         f"{_fmt(d['marks'][-1])} |")
        lines.append("")
        for c in summary["comparisons"]:
            if c["metric"] == metric:
                lines.append(f"- {labels.get(c['a'], c['a'])} − {labels.get(c['b'], c['b'])}: {c['verdict']}.")
        lines.append("")
    return "\n".join(lines)


def plot_cell(summary: dict, labels: dict[str, str], metric_titles: dict[str, str], path: str,
              references: dict[str, tuple[float, str]] | None = None) -> None:
    """One panel per metric: the mean over seeds (line), the 95% t band (shaded) and the seed range (dotted); a
    metric measured at one time only gets its t interval as an error bar. ``references``: per metric, a dashed
    horizontal line (value, label), e.g. chance. Fractions are drawn on at least a 0.1-wide axis, so that a change
    of one held-out answer does not fill the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m, d in summary["metrics"].items()
               if any(mark["mean"] is not None for per in d.values() for mark in per["marks"])]
    if not metrics:
        return
    longest = max(t for d in summary["metrics"].values() for per in d.values() for t in per["train_seconds"])
    unit, scale = ("seconds", 1) if longest < 180 else ("minutes", 60)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, (method, d) in enumerate(summary["metrics"][metric].items()):
            color = f"C{k}"
            points = [(t / scale, m) for t, m in zip(d["train_seconds"], d["marks"]) if m["mean"] is not None]
            xs, marks = [x for x, _ in points], [m for _, m in points]
            n = d["marks"][-1]["n"]
            ax.plot(xs, [m["mean"] for m in marks], "o-", color=color, label=f"{labels.get(method, method)} (n={n})")
            banded = [(x, m) for x, m in points if m["lo"] is not None]
            if banded:
                bx = [x for x, _ in banded]
                ax.fill_between(bx, [max(0.0, m["lo"]) if metric != "steps_per_completion" else m["lo"]
                                     for _, m in banded],
                                [min(1.0, m["hi"]) if metric != "steps_per_completion" else m["hi"]
                                 for _, m in banded], color=color, alpha=0.18, linewidth=0)
                ax.plot(bx, [m["min"] for _, m in banded], ":", color=color, linewidth=1)
                ax.plot(bx, [m["max"] for _, m in banded], ":", color=color, linewidth=1)
                if len(banded) == 1:  # no band to shade: the interval as an error bar, the seed range as ticks
                    (x, m), = banded
                    ax.errorbar([x], [m["mean"]], yerr=[[m["mean"] - m["lo"]], [m["hi"] - m["mean"]]], color=color,
                                capsize=5, linewidth=1.5)
                    ax.plot([x, x], [m["min"], m["max"]], "_", color=color, markersize=14)
        if metric in (references or {}):
            value, text = references[metric]
            ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=text)
        ax.set_xlabel(f"training wall time, {unit} (evaluation excluded)")
        ax.set_ylabel(metric_titles.get(metric, metric))
        ax.set_xlim(-0.03 * longest / scale, 1.05 * longest / scale)
        if metric != "steps_per_completion":  # fractions: never outside [0, 1], never a sub-0.1 axis
            lo, hi = ax.get_ylim()
            if hi - lo < 0.1:
                middle = (lo + hi) / 2
                lo, hi = middle - 0.05, middle + 0.05
            ax.set_ylim(max(lo, -0.02), min(hi, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary['title']}\nline: mean over seeds; band: 95% t interval; dotted: min–max", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
