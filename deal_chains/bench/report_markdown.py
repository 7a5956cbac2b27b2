"""``report.md`` and the printed tables of ``deal-chains bench report``, from its report dict."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence



FIGURES = {
    "pareto": "fig1_commongen_pareto.png",
    "matched": "fig2_matched_compute.png",
    "json": "fig3_json_validity.png",
    "harmless": "fig4_harmless.png",
}

MATCHING_RULE = (
    "`result.stats.forward_passes` counts *batched* model calls: the n samples of best_of_n and the "
    "n hypotheses of rerank are rows of the same calls, so that count barely moves with n and cannot be "
    "matched. Compute is therefore matched on *decode tokens*: the rows x positions the model ran "
    "after the prompt (counted by a forward hook on the model; the prompt's prefill is the same for "
    "every strategy). greedy, sample and DeAL run first; best_of_n costs about n x sample's decode "
    "tokens and rerank (a beam search of width n over n candidates each) about n^2 x greedy's, so "
    "each gets the n whose estimate is closest to DeAL's decode tokens (in log ratio); the table shows "
    "the measured ratio to DeAL (`x DeAL work`).")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _ci(ci: dict[str, float]) -> str:
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pareto_table(part: dict[str, Any]) -> str:
    rows = []
    for r in part["rows"]:
        s = r["setting"] or {}
        rows.append([r["strategy"], s.get("top_k", "-"), s.get("lookahead", "-"), s.get("beam", "-"),
                     s.get("commit", "-"), r["soft_coverage"], r["hard_coverage"], r["seconds_per_prompt"],
                     r["ratio_to_greedy"], r["mean_forward_passes"], r["decode_tokens_per_prompt"],
                     r["mean_logprob_per_token"], r["pareto_soft"], r["pareto_hard"]])
    return md_table(["setting", "top_k", "lookahead", "beam", "commit", "soft cov", "hard cov", "s/prompt",
                     "x greedy", "forwards", "decode tok", "logprob/tok", "front (soft)", "front (hard)"], rows)


def matched_table(part: dict[str, Any]) -> str:
    rows = [[r["strategy"], r["n"], _ci(r["soft_ci"]), _ci(r["hard_ci"]), r["mean_forward_passes"],
             r["seconds_per_prompt"], r["ratio_to_greedy"], r["decode_tokens_per_prompt"], r["work_vs_deal"],
             r["mean_logprob_per_token"]] for r in part["rows"]]
    return md_table(["strategy", "n", "soft cov [95% CI]", "hard cov [95% CI]", "forwards", "s/prompt", "x greedy",
                     "decode tok", "x DeAL work", "logprob/tok"], rows)


def json_table(part: dict[str, Any]) -> str:
    rows = [[r["strategy"], r["n"], _ci(r["valid_ci"]), r["parseable"], r["seconds_per_prompt"],
             r["ratio_to_greedy"], r["finished_rate"], r["mean_new_tokens"]] for r in part["rows"]]
    return md_table(["strategy", "schemas", "valid [95% CI]", "parseable", "s/output", "x greedy", "finished",
                     "tokens"], rows)


def harmless_table(part: dict[str, Any]) -> str:
    rows = [[r["strategy"], _ci(r["harmless_ci"]), r["harmless_median"], r["refusal_rate"],
             r["mean_logprob_per_token"], r["seconds_per_prompt"], r["ratio_to_greedy"], r["mean_new_tokens"],
             r["finished_rate"]] for r in part["rows"]]
    return md_table(["strategy", "harmless mean [95% CI]", "median", "refusal", "logprob/tok", "s/prompt",
                     "x greedy", "tokens", "finished"], rows)


def _machine_line(m: dict[str, Any]) -> str:
    dev = m["device"] + (f" ({m['gpu']})" if m.get("gpu") else "")
    return (f"{m['cpu_count']} CPU cores ({m['torch_threads']} torch threads), device {dev}, torch {m['torch']}, "
            f"Python {m['python']}, {m['platform']}")


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    figs = report["figures"]
    st = report["settings"]
    pareto, matched, js, harm = figs["pareto"], figs["matched"], figs["json"], figs["harmless"]
    common = (f"- Command: `{report['command']}`\n- Machine: {_machine_line(m)}\n"
              f"- Model: `{report['model']}` ({m['dtype']})\n")
    match = matched["matching"]
    refused = js.get("refused") or {}
    def took(part: dict[str, Any]) -> str:
        sec = part.get("section_seconds")
        return "" if sec is None else f"- Section wall time: {sec:.1f} s\n"

    parts = [
        f"# deal-chains benchmark report ({report['mode']})\n",
        common,
        f"Total wall time {report['seconds_total']:.1f} s. Every time ratio is against greedy measured in the same "
        "run on the same prompts; compare ratios across machines, not absolute seconds. Intervals are 95% "
        f"percentile-bootstrap intervals over prompts ({st['bootstrap']} resamples, numpy seed {st['seed']}). "
        f"CommonGen runs are timed {st['repeats']} time(s), the fastest kept.\n",
        (f"**{shared_warning(report)}**\n" if report.get("shared_machine") else ""),
        "## 1. CommonGen: quality vs time over search settings\n",
        f"![CommonGen quality vs time]({FIGURES['pareto']})\n",
        common + took(pareto),
        f"- Data: first {pareto['n']} CommonGen concept sets of `{report['data']['commongen_data']}`, reward = "
        f"keyword coverage (lemminflect inflections), {pareto['max_new_tokens']} new tokens at most, all prompts "
        "batched.\n",
        "- How to read it: each dot is one DeAL setting (top_k, lookahead, beam, commit); up is better coverage, "
        "left is cheaper; the line joins the settings no other setting beats on both (the Pareto front), the star "
        "is greedy, and the top axis gives the same time as a multiple of greedy's.\n",
        pareto_table(pareto) + "\n",
        f"Pareto front (soft): {', '.join(pareto['pareto']['soft_coverage'])}. "
        f"Pareto front (hard): {', '.join(pareto['pareto']['hard_coverage'])}. s/prompt = mean "
        "`result.stats.seconds` (a batch's wall time shared by its prompts); decode tok = tokens the model ran "
        "per prompt after the prompt.\n",
        "## 2. Strategies at matched compute\n",
        f"![strategies at matched compute]({FIGURES['matched']})\n",
        common + took(matched),
        f"- Data: the same {matched['n']} CommonGen prompts; DeAL = the defaults (top_k 6, lookahead 4, "
        "commit 4, beam 2, lam 48); sample / best_of_n at temperature "
        f"{st['sample_temperature']}; best_of_n and rerank pick by the same score (logprob + lam * reward).\n",
        "- How to read it: bars are coverage with 95% bootstrap intervals; strategies whose intervals overlap are "
        "not distinguishable on this many prompts; the right panel shows what each strategy cost (model work "
        "and seconds), so best_of_n / rerank / DeAL compare at about the same work.\n",
        f"- How n was matched: {match['rule']} Here: DeAL {match['deal_decode_tokens']:.1f} decode tokens per "
        f"prompt, sample {match['sample_decode_tokens']:.1f}, greedy {match['greedy_decode_tokens']:.1f} -> "
        f"best_of_n n = {match['best_of_n_n']}, rerank n = {match['rerank_n']}.\n",
        matched_table(matched) + "\n",
        "## 3. JSON: validity vs cost\n",
        f"![JSON validity]({FIGURES['json']})\n",
        common + took(js),
        f"- Data: first {js['n_schemas']} schemas (by file name) of `{report['data']['schemas']}`; the model is "
        f"asked for one example value; {js['max_new_tokens']} new tokens at most. greedy = unconstrained, soft = "
        f"DeAL ranked by the JSON-schema reward (no mask; top_k {js['deal_config']['top_k']}, beam "
        f"{js['deal_config']['beam']}, lookahead {js['deal_config']['lookahead']}, lam {js['deal_config']['lam']:g}), "
        "hard = greedy "
        "under the grammar mask (only the schemas the grammar engine accepts"
        + (f"; refused: {', '.join(f'{k} ({v})' for k, v in refused.items())}" if refused else "") + ").\n",
        "- How to read it: left, the share of outputs that parse and validate against their schema (a hard-masked "
        "output that the token budget cut is invalid); right, seconds per output.\n",
        json_table(js) + "\n",
        "## 4. Harmlessness on AdvBench requests\n",
        f"![harmless reward distribution]({FIGURES['harmless']})\n",
        common + took(harm),
        f"- Data: first {harm['n']} requests of `{report['data']['advbench']}`; both rows use the system prompt "
        f"\"{harm['system']}\"; DeAL uses the `harmless` preset's search settings (reward: the harmless head "
        f"`{Path(harm['head']).name}` on the model's own hidden states) with {st['harmless_max_new_tokens']} new tokens at most.\n",
        "- How to read it: each box is the distribution over prompts of the harmless reward (0 to 1, higher = "
        "judged more harmless) of the answers, dots are prompts and grey lines pair the two answers to one "
        f"prompt. DeAL scored higher than greedy on {harm['deal_higher']} of {harm['n']} prompts, lower on "
        f"{harm['deal_lower']}. The head is a weak judge (0.61 held-out pairwise accuracy, docs/benchmarks.md).\n",
        harmless_table(harm) + "\n",
    ]
    return "\n".join(parts)


def print_tables(report: dict[str, Any], file: Any = None) -> None:
    figs = report["figures"]
    file = file or sys.stdout
    for title, table in (("1. CommonGen quality vs time", pareto_table(figs["pareto"])),
                         ("2. strategies at matched compute", matched_table(figs["matched"])),
                         ("3. JSON validity", json_table(figs["json"])),
                         ("4. harmless reward", harmless_table(figs["harmless"]))):
        print(f"## {title}\n\n{table}\n", file=file)


def shared_warning(report: dict[str, Any]) -> str:
    c, m = report["cpu_contention"], report["machine"]
    advice = ("Rerun on an idle machine, or with --threads 1 (or DEAL_CHAINS_THREADS=1), which degrades far less "
              "when cores are oversubscribed." if (m.get("torch_threads") or 1) > 1 else
              "Absolute seconds are inflated; ratios are less affected with one torch thread, but rerun on an idle "
              "machine for figures to quote.")
    return (f"Warning: other processes used {c['others_share']:.0%} of this machine's CPU during the run "
            f"({c['others_cpu_seconds']:.0f} CPU seconds over {c['wall_seconds']:.0f} s on {m['cpu_count']} cores; "
            f"this run: {m['torch_threads']} torch threads): a stalled run inflates its seconds and every ratio "
            f"built on it. {advice}")
