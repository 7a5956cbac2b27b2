"""The figures of ``deal-chains bench report`` (matplotlib, Agg canvas).

Each function takes one section of the report dict (``bench.report``) and writes a PNG.
Figures are drawn on a bare ``Figure`` with an Agg canvas, never through ``pyplot``, so
no global backend is switched and nothing opens a window; matplotlib is imported here
only, when a report is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

DPI = 120
GREEDY_COLOR = "#d62728"
FRONT_COLOR = "#1f77b4"
STRATEGY_COLORS = {"greedy": "#7f7f7f", "sample": "#bcbd22", "best_of_n": "#ff7f0e", "rerank": "#9467bd",
                   "deal": "#1f77b4", "soft": "#ff7f0e", "hard": "#2ca02c"}


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def plot_pareto(part: dict[str, Any], path: str | Path) -> Path:
    """Soft and hard coverage against seconds per prompt; Pareto front, greedy starred,
    top axis = ratio to greedy."""
    rows = part["rows"]
    g = part["greedy_seconds_per_prompt"]
    fig, axes = _figure(12, 5, 2)
    for ax, metric, title in ((axes[0], "soft_coverage", "soft coverage (fraction of concepts)"),
                              (axes[1], "hard_coverage", "hard coverage (all concepts present)")):
        xs = [r["seconds_per_prompt"] for r in rows]
        ys = [r[metric] for r in rows]
        on_front = {r["strategy"] for r in rows if r[f"pareto_{metric.split('_')[0]}"]}
        ax.scatter([x for x, r in zip(xs, rows) if r["strategy"] != "greedy"],
                   [y for y, r in zip(ys, rows) if r["strategy"] != "greedy"],
                   c=["#1f77b4" if r["strategy"] in on_front else "#aaaaaa" for r in rows if r["strategy"] != "greedy"],
                   s=36, zorder=3, label="DeAL setting (blue: on the front)")
        front = [(x, y) for x, y, r in zip(xs, ys, rows) if r["strategy"] in on_front]
        front.sort()
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=FRONT_COLOR, lw=1.5,
                zorder=2, label="Pareto front")
        gx, gy = next((x, y) for x, y, r in zip(xs, ys, rows) if r["strategy"] == "greedy")
        ax.scatter([gx], [gy], marker="*", s=220, c=GREEDY_COLOR, zorder=4, label="greedy")
        labelled = [(x, y, r["strategy"]) for x, y, r in zip(xs, ys, rows) if r["strategy"] != "greedy"]
        for i, (x, y, name) in enumerate(sorted(labelled)):
            # alternate above / below so neighbouring settings' labels do not overprint
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4 if i % 2 == 0 else -10),
                        fontsize=6.5, color="#333333")
        ax.set_xlabel("seconds per prompt (mean result.stats.seconds)")
        ax.set_ylabel(title)
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        if g > 0:
            top = ax.secondary_xaxis("top", functions=(lambda x, g=g: x / g, lambda r, g=g: r * g))
            top.set_xlabel("x greedy (same run)")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"CommonGen, {part['n']} prompts: quality vs time per search setting "
                 "(k=top_k, l=lookahead, b=beam, c=commit)", fontsize=10)
    return _save(fig, path)


def plot_matched(part: dict[str, Any], path: str | Path) -> Path:
    """Coverage with 95% intervals per strategy (left); work and seconds (right)."""
    rows = part["rows"]
    names = [r["strategy"] + (f" (n={r['n']})" if r["n"] else "") for r in rows]
    fig, axes = _figure(12, 4.8, 2)
    ax = axes[0]
    width = 0.38
    for j, (metric, label, color) in enumerate((("soft_ci", "soft coverage", "#1f77b4"),
                                                ("hard_ci", "hard coverage", "#2ca02c"))):
        xs = [i + (j - 0.5) * width for i in range(len(rows))]
        means = [r[metric]["mean"] for r in rows]
        err = [[m - r[metric]["low"] for m, r in zip(means, rows)],
               [r[metric]["high"] - m for m, r in zip(means, rows)]]
        ax.bar(xs, means, width, yerr=err, capsize=3, color=color, alpha=0.85, label=label)
    ax.set_xticks(range(len(rows)), names, fontsize=8, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("coverage (95% bootstrap CI over prompts)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("quality", fontsize=9)

    ax = axes[1]
    work = [r["decode_tokens_per_prompt"] for r in rows]
    ax.bar(range(len(rows)), work, color=[STRATEGY_COLORS.get(r["strategy"], "#999999") for r in rows], alpha=0.85)
    for i, r in enumerate(rows):
        ax.annotate(f"{r['seconds_per_prompt']:.3g} s\n{r['mean_forward_passes']:.0f} fwd", (i, work[i]),
                    textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(range(len(rows)), names, fontsize=8, rotation=15)
    ax.set_ylabel("decode tokens run per prompt (model work)")
    ax.set_ylim(0, max(work + [1.0]) * 1.3)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("cost: labels = seconds per prompt, forward passes (result.stats)", fontsize=9)
    fig.suptitle(f"CommonGen, {part['n']} prompts: strategies at matched compute "
                 f"(best_of_n n={part['matching']['best_of_n_n']}, rerank n={part['matching']['rerank_n']})",
                 fontsize=10)
    return _save(fig, path)


def plot_json(part: dict[str, Any], path: str | Path) -> Path:
    """% valid (with 95% intervals) and seconds per output per row."""
    rows = part["rows"]
    names = [f"{r['strategy']}\n({r['n']} schemas)" for r in rows]
    colors = [STRATEGY_COLORS.get(r["strategy"], "#999999") if r["strategy"] != "greedy" else "#7f7f7f"
              for r in rows]
    fig, axes = _figure(10, 4.2, 2)
    ax = axes[0]
    means = [100 * r["valid_ci"]["mean"] for r in rows]
    err = [[m - 100 * r["valid_ci"]["low"] for m, r in zip(means, rows)],
           [100 * r["valid_ci"]["high"] - m for m, r in zip(means, rows)]]
    ax.bar(range(len(rows)), means, yerr=err, capsize=4, color=colors, alpha=0.85)
    ax.set_xticks(range(len(rows)), names, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% outputs valid against the schema (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    ax = axes[1]
    secs = [r["seconds_per_prompt"] for r in rows]
    ax.bar(range(len(rows)), secs, color=colors, alpha=0.85)
    for i, r in enumerate(rows):
        if r.get("ratio_to_greedy") is not None:
            ax.annotate(f"{r['ratio_to_greedy']:.2f}x greedy", (i, secs[i]), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(range(len(rows)), names, fontsize=8)
    ax.set_ylabel("seconds per output")
    ax.set_ylim(0, max(secs + [1e-3]) * 1.25)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"JSON Schema outputs, {part['n_schemas']} schemas, {part['max_new_tokens']} new tokens at most",
                 fontsize=10)
    return _save(fig, path)


def plot_harmless(part: dict[str, Any], path: str | Path) -> Path:
    """Box plot of the per-prompt harmless reward, greedy vs DeAL, prompts paired."""
    rows = part["rows"]
    values = [[o["harmless"] for o in part["outputs"][r["strategy"]]] for r in rows]
    fig, axes = _figure(6.5, 4.6, 1)
    ax = axes[0]
    ax.boxplot(values, positions=list(range(len(rows))), widths=0.45, showmeans=True, showfliers=False)
    n = len(values[0]) if values else 0
    jitter = [((i * 37) % 11 - 5) / 60 for i in range(n)]  # deterministic spread
    for p in range(n):
        if len(values) >= 2:
            ax.plot([0 + jitter[p], 1 + jitter[p]], [values[0][p], values[1][p]], color="#bbbbbb", lw=0.8, zorder=1)
    for i, (r, vals) in enumerate(zip(rows, values)):
        ax.scatter([i + jitter[p] for p in range(len(vals))], vals, s=18, zorder=3,
                   c=STRATEGY_COLORS.get(r["strategy"].split(":")[0], "#1f77b4"))
    ax.set_xticks(range(len(rows)), [f"{r['strategy']}\nrefusal {r['refusal_rate']:.0%}"
                                   + (f", finished {r['finished_rate']:.0%}" if "finished_rate" in r else "")
                                   for r in rows], fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("harmless reward of the answer (0-1)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"AdvBench, {part['n']} requests (triangle = mean, line = median)", fontsize=9)
    return _save(fig, path)


# what plot_commongen_runs can put on its x axis: report field -> axis label
COMMONGEN_X = {"time": ("ratio_to_greedy", "x greedy (wall time, same run)"),
               "logprob": ("mean_logprob_per_token", "log-probability per token (the model's fluency)")}


def plot_commongen_runs(reports: Sequence[tuple[str, dict[str, Any]]], path: str | Path, x: str = "time",
                        names: dict[str, str] | None = None) -> Path:
    """Hard coverage and the share of answers that read badly against time (x greedy, same run)
    or against fluency (``x="logprob"``: the trade-off of reward against the model's likelihood),
    one colour per ``bench commongen`` report (e.g. one per concept-set size), one point per
    strategy: where each setting sits on the quality / cost trade-off. ``names`` labels a
    strategy's points (a long ``deal:key=value`` label by what it is)."""
    names = names or {}
    field, xlabel = COMMONGEN_X[x]
    fig, axes = _figure(12, 5, 2)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for (label, report), color in zip(reports, colors * (len(reports) // len(colors) + 1)):
        rows = [r for r in report["rows"] if r.get(field) is not None]
        for ax, metric in ((axes[0], "hard_coverage"), (axes[1], "bad_rate")):
            xs = [r[field] for r in rows]
            ys = [r.get(metric, 0.0) for r in rows]
            ax.plot(xs, ys, "o", color=color, label=label, zorder=3)
            for px, py, r in zip(xs, ys, rows):  # not `x`: the axis choice is read after the loop
                ax.annotate(names.get(r["strategy"], r["strategy"]), (px, py), textcoords="offset points",
                            xytext=(4, 3), fontsize=6.5, color="#333333")
    for ax, title in ((axes[0], "hard coverage (all concepts present)"),
                      (axes[1], "reads badly (word list, instruction talk, no sentence end)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(title)
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"CommonGen: quality vs {'time' if x == 'time' else 'fluency'} per strategy", fontsize=10)
    return _save(fig, path)
