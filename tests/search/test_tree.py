"""The tree search's named steps (plan, propose, roll out, evaluate, score, select, commit) on the
tiny random-weight Llama: each step's contract, and that run_tree_search is those steps."""

from __future__ import annotations

import pytest
import torch

from deal_chains.errors import RewardError
from deal_chains.search import tree
from deal_chains.search.kv import KVBatch
from deal_chains.search.state import TreeParams
from rewards import BaseReward
from search_fixtures import CharShare, tree_state


def _state(lm, params, rewards=(), prompts=("hello world", "abc")):
    return tree_state(lm, params, rewards, prompts)


def _params(**kw):
    base = dict(top_k=3, beam=2, lookahead=2, commit=2, lam=4.0, max_new_tokens=8)
    return TreeParams(**{**base, **kw})


def test_plan_commits_the_block_and_skips_the_lookahead_without_rewards(tiny_lm):
    with_rewards = _state(tiny_lm, _params(lookahead=3), rewards=[CharShare("e")])
    step = tree.plan(with_rewards)
    assert (step.commit, step.forwards, step.remaining) == (2, 3, 8)
    without = _state(tiny_lm, _params(lookahead=3))
    assert tree.plan(without).forwards == 2  # no reward can change the choice: commit only
    with_rewards.generated = 7
    assert tree.plan(with_rewards).commit == 1  # the budget's last token


def test_propose_gives_top_k_candidates_per_row_in_order(tiny_lm):
    state = _state(tiny_lm, _params(prune=False), rewards=[CharShare("e")])
    step = tree.plan(state)
    proposals = tree.propose(state, step)
    assert proposals.parent == [0, 0, 0, 1, 1, 1] and proposals.live_groups == [0, 1]
    logp = torch.log_softmax(state.logits, dim=-1)
    for row in (0, 1):
        top = logp[row].topk(3)
        mine = [i for i, p in enumerate(proposals.parent) if p == row]
        assert [proposals.token[i] for i in mine] == top.indices.tolist()
        assert [proposals.logprob[i] for i in mine] == pytest.approx(top.values.tolist())


def test_a_settled_row_proposes_one_token(tiny_lm):
    state = _state(tiny_lm, _params(prune=False), rewards=[CharShare("e")])
    state.rows.settled = [True, False]
    proposals = tree.propose(state, tree.plan(state))
    assert proposals.parent.count(0) == 1 and proposals.parent.count(1) == 3


def test_roll_out_evaluate_score_select_keep_beam_rows_per_group(tiny_lm):
    params = _params(prune=False)
    state = _state(tiny_lm, params, rewards=[CharShare("e")])
    step = tree.plan(state)
    proposals = tree.propose(state, step)
    rollout = tree.roll_out(state, step, proposals)
    assert len(rollout.tokens) == 6 and all(len(t) == len(rollout.tokens[0]) <= step.forwards + 1
                                            for t in rollout.tokens)
    cands = tree.evaluate(state, step, proposals, rollout)
    assert all(len(t) == step.commit for t, f in zip(cands.tokens, cands.finished) if not f)
    tree.score(state, cands)
    chosen, rows = tree.select(state, step, cands, rollout)
    for gi in (0, 1):
        best = sorted(cands.by_group[gi], key=lambda i: (-cands.scores[i], i))[:params.beam]
        live = [i for i in best if not cands.finished[i]]
        assert sorted(c for c, g in zip(chosen, rows.group) if g == gi) == sorted(live)


def test_a_failing_reward_is_named_by_the_scorer(tiny_lm):
    class Broken(BaseReward):
        name, weight, terminal = "broken", 1.0, False

        def score(self, texts, context):
            raise KeyError("boom")

    state = _state(tiny_lm, _params(prune=False), rewards=[Broken()])
    step = tree.plan(state)
    proposals = tree.propose(state, step)
    cands = tree.evaluate(state, step, proposals, tree.roll_out(state, step, proposals))
    with pytest.raises(RewardError, match="reward 'broken' failed: KeyError"):
        tree.score(state, cands)


def test_run_tree_search_is_the_steps_in_order(tiny_lm, monkeypatch):
    seen: list[str] = []
    for name in ("plan", "propose", "roll_out", "evaluate", "score", "select", "commit"):
        real = getattr(tree, name)

        def spy(*a, real=real, name=name, **k):
            seen.append(name)
            return real(*a, **k)

        monkeypatch.setattr(tree, name, spy)
    params = _params()
    state = _state(tiny_lm, params, rewards=[CharShare("e")], prompts=("hello world",))
    tree.run_tree_search(state.kv, state.logits, state.groups, params, tiny_lm.eos_token_ids, tiny_lm.decode)
    assert seen[:7] == ["plan", "propose", "roll_out", "evaluate", "score", "select", "commit"]
    g = state.groups[0]
    assert g.finished or g.unfinished


def _answers(state):
    return [[(h.tokens, h.finished, h.score) for h in g.finished + g.unfinished] for g in state.groups]


def test_a_commit_rule_replaces_plan(tiny_lm):
    """A rule committing one token a step searches exactly as ``commit=1`` does with ``plan``."""
    calls: list[int] = []

    def one_token(state):
        calls.append(state.generated)
        step = tree.plan(state)
        return tree.Step(commit=1, forwards=max(step.forwards, 1), remaining=step.remaining)

    searched = []
    for params, rule in ((_params(commit=1), None), (_params(commit=2), one_token)):
        state = _state(tiny_lm, params, rewards=[CharShare("e")])
        tree.run_tree_search(state.kv, state.logits, state.groups, params, tiny_lm.eos_token_ids,
                             tiny_lm.decode, commit_rule=rule)
        searched.append(_answers(state))
    assert calls[:3] == [0, 1, 2]  # consulted every step, the budget advancing one token each
    assert searched[0] == searched[1]


def test_a_scorer_replaces_score(tiny_lm):
    """A scorer preferring the least likely candidate makes a one-beam search take the prompt's
    k-th most likely first token."""
    params = _params(top_k=3, beam=1, commit=1, lookahead=0, max_new_tokens=3)
    state = _state(tiny_lm, params, prompts=("hello world",))
    third = state.logits[0].topk(3).indices[2].item()

    def least_likely(state, cands):
        cands.scores = [-lp for lp in cands.logprob]

    tree.run_tree_search(state.kv, state.logits, state.groups, params, tiny_lm.eos_token_ids, tiny_lm.decode,
                         scorer=least_likely)
    (answer,) = state.groups[0].finished + state.groups[0].unfinished
    assert answer.tokens[0] == third
    default = _state(tiny_lm, params, prompts=("hello world",))
    tree.run_tree_search(default.kv, default.logits, default.groups, params, tiny_lm.eos_token_ids,
                         tiny_lm.decode)
    assert (default.groups[0].finished + default.groups[0].unfinished)[0].tokens[0] != third


def _eos_shifted(tiny_model_dir, shift: float, token=None):
    """The tiny model with ``shift`` added to its end-of-sequence logit (or ``token(lm)``'s),
    for one test: load_model caches, so this is the model other tests' tiny_lm returns, and
    the hook goes after."""
    from deal_chains.models import load_model

    lm = load_model(str(tiny_model_dir), device="cpu", dtype="float64")
    eos = min(lm.eos_token_ids) if token is None else token(lm)

    def shift_eos(module, inputs, output):
        output[..., eos] += shift
        return output

    handle = lm.model.get_output_embeddings().register_forward_hook(shift_eos)
    yield lm
    handle.remove()


@pytest.fixture()
def eos_loving_lm(tiny_model_dir):
    """The tiny model with its end-of-sequence logit raised: it ends at once unless told not to."""
    yield from _eos_shifted(tiny_model_dir, 50.0)


def test_no_ending_while_a_keyword_is_missing_and_budget_is_left(eos_loving_lm):
    from deal_chains import DeALEngine, SearchConfig
    from rewards import KeywordCoverage

    engine = DeALEngine(eos_loving_lm)
    reward = [KeywordCoverage(["zebra", "quartz"])]  # the random model never writes them
    base = dict(strategy="deal", max_new_tokens=12, top_k=2, beam=1, lookahead=2)
    [held] = engine.generate(["hi"], reward, SearchConfig(**base, hold_eos=True))
    [free] = engine.generate(["hi"], reward, SearchConfig(**base))  # off by default
    assert free.finished and len(free.token_ids) == 0  # ends at once
    # held: ends only once the budget left (12 - n), less the end's own token, can no longer pay
    # the 4 tokens owed
    assert held.finished and len(held.token_ids) >= 12 - 4 - 1, held.token_ids
    # greedy is the baseline: it is never held
    [greedy] = engine.generate(["hi"], reward, SearchConfig(strategy="greedy", max_new_tokens=12))
    assert len(greedy.token_ids) == 0
    # a weight-0 reward owes nothing: the model may end
    [met] = engine.generate(["hi"], [KeywordCoverage(["zebra"], weight=0.0)], SearchConfig(**base, hold_eos=True))
    assert len(met.token_ids) == 0


@pytest.fixture()
def period_loving_lm(tiny_model_dir):
    """The tiny model with the logit of "." raised: it writes a period at every token."""
    yield from _eos_shifted(tiny_model_dir, 50.0, token=lambda lm: lm.tokenizer.encode(".", add_special_tokens=False)[0])


def test_hold_ends_keeps_a_sentence_end_out_while_a_keyword_is_missing(period_loving_lm):
    from deal_chains import DeALEngine, SearchConfig
    from deal_chains.errors import ConfigError
    from rewards import KeywordCoverage

    engine = DeALEngine(period_loving_lm)
    period = period_loving_lm.tokenizer.encode(".", add_special_tokens=False)[0]
    reward = [KeywordCoverage(["zebra"])]  # never written: 5 tokens owed
    base = dict(strategy="deal", max_new_tokens=16, top_k=2, beam=1, lookahead=2, hold_eos=True)
    [free] = engine.generate(["hi"], reward, SearchConfig(**base))
    [held] = engine.generate(["hi"], reward, SearchConfig(**base, hold_ends=["."]))
    assert free.token_ids[:1] == [period]  # hold_eos alone holds end-of-sequence only
    # no token with a "." while the budget left, less what an ending keeps back (the sentence
    # end, end-of-sequence and one commit block of 2), could still place the word (16 - 5 - 4)
    assert period not in held.token_ids[:7], held.text
    assert not any("." in period_loving_lm.tokenizer.decode([t]) for t in held.token_ids[:7])
    # once the word is in, the end is free again: a weight-0 reward owes nothing
    [met] = engine.generate(["hi"], [KeywordCoverage(["zebra"], weight=0.0)], SearchConfig(**base, hold_ends=["."]))
    assert met.token_ids[:1] == [period]
    with pytest.raises(ConfigError, match="hold_ends.*hold_eos"):
        SearchConfig.build(strategy="deal", hold_ends=["."])
    with pytest.raises(ConfigError, match="hold_ends"):
        SearchConfig.build(strategy="deal", hold_eos=True, hold_ends=[""])


@pytest.fixture()
def period_shy_lm(tiny_model_dir):
    """The tiny model that never ranks "." among its likeliest tokens but ends right after one:
    a sentence that is never closed unless the search makes "." a candidate."""
    from deal_chains.models import load_model

    lm = load_model(str(tiny_model_dir), device="cpu", dtype="float64")
    period = lm.tokenizer.encode(".", add_special_tokens=False)[0]
    eos = min(lm.eos_token_ids)
    after_period: list[torch.Tensor] = []

    def read_input(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        after_period[:] = [ids[:, -1] == period]

    def shift(module, inputs, output):
        output[..., period] -= 30.0
        output[..., eos] += torch.where(after_period[0], 60.0, -60.0).unsqueeze(-1)
        return output

    hooks = [lm.model.register_forward_pre_hook(read_input, with_kwargs=True),
             lm.model.get_output_embeddings().register_forward_hook(shift)]
    yield lm, period
    for h in hooks:
        h.remove()


def test_near_the_budget_a_sentence_end_is_a_candidate(period_shy_lm):
    from deal_chains import DeALEngine, SearchConfig
    from rewards import KeywordCoverage

    lm, period = period_shy_lm
    engine = DeALEngine(lm)
    reward = [KeywordCoverage(["zebra"])]  # never written: the end is held while budget is left
    base = dict(strategy="deal", max_new_tokens=16, top_k=2, beam=2, lookahead=2, hold_eos=True)
    # end-of-sequence alone is held: "." is never a candidate, so the budget cuts the answer
    [cut] = engine.generate(["hi"], reward, SearchConfig(**base))
    assert not cut.finished and cut.finish_reason == "length" and period not in cut.token_ids
    # with "." as the sentence end, it becomes a candidate in the last steps and the answer ends
    [ended] = engine.generate(["hi"], reward, SearchConfig(**base, hold_ends=["."]))
    assert ended.finished and ended.finish_reason == "stop", ended.text
    assert ended.token_ids[-1] == period and period not in ended.token_ids[:-1]
    assert len(ended.token_ids) > 16 - 2 * 2 - 1  # within the last two steps of the budget


def test_tokens_owed_counts_missing_keywords():
    from rewards import KeywordCoverage
    from rewards.base import RewardContext, reward_tokens_owed

    kw = KeywordCoverage(["dog", "ball", "run"])
    assert reward_tokens_owed(kw, "The dog ran.", RewardContext()) == 2  # "ran" counts for run
    assert reward_tokens_owed(kw, "The dog ran after the ball.", RewardContext()) == 0
    assert reward_tokens_owed(KeywordCoverage(["x"], weight=0.0), "", RewardContext()) == 0


@pytest.mark.parametrize("drop", [0.05, 0.5, 2.0])
def test_candidates_stay_within_max_logprob_drop_of_the_likeliest(tiny_lm, drop):
    state = _state(tiny_lm, _params(prune=False, top_k=12, max_logprob_drop=drop), rewards=[CharShare("e")])
    proposals = tree.propose(state, tree.plan(state))
    logp = torch.log_softmax(state.logits, dim=-1)
    for row in (0, 1):
        mine = [proposals.logprob[i] for i, p in enumerate(proposals.parent) if p == row]
        best = float(logp[row].max())
        assert mine and mine[0] == pytest.approx(best)  # the likeliest token always stays
        assert all(v >= best - drop - 1e-9 for v in mine)
        # exactly the top-12 tokens within the margin
        top = logp[row].topk(12).values
        assert len(mine) == int((top >= best - drop).sum())


def test_the_answers_first_step_has_its_own_width_and_bound(tiny_lm):
    """``first_top_k`` / ``first_max_logprob_drop`` apply while a row has no token yet; later
    steps use ``top_k`` / ``max_logprob_drop``."""
    params = _params(prune=False, top_k=3, first_top_k=9, first_max_logprob_drop=0.5)
    state = _state(tiny_lm, params, rewards=[CharShare("e")])
    logp = torch.log_softmax(state.logits, dim=-1)
    first = tree.propose(state, tree.plan(state))
    for row in (0, 1):
        mine = [v for p, v in zip(first.parent, first.logprob) if p == row]
        top = logp[row].topk(9).values
        assert len(mine) == int((top >= top[0] - 0.5).sum()) and all(v >= top[0] - 0.5 - 1e-9 for v in mine)
    state.rows.tokens = [[5], [6]]  # past the first step: top_k, and no bound (max_logprob_drop None)
    later = tree.propose(state, tree.plan(state))
    assert [later.parent.count(row) for row in (0, 1)] == [3, 3]
    assert TreeParams(top_k=3, beam=2, lookahead=2, commit=2, lam=1.0, max_new_tokens=8,
                      max_logprob_drop=2.0).width(first=True) == (3, 2.0)  # unset: the same as later


def test_a_wider_first_step_reaches_the_search_and_leaves_greedy_alone(tiny_lm):
    from deal_chains import DeALEngine, SearchConfig

    engine = DeALEngine(tiny_lm)
    base = dict(strategy="deal", top_k=2, beam=1, lookahead=1, max_new_tokens=6, prune=False, adaptive=False)
    [narrow] = engine.generate(["hello"], [CharShare("e")], SearchConfig(**base))
    [wide] = engine.generate(["hello"], [CharShare("e")], SearchConfig(**base, first_top_k=8))
    steps = narrow.stats.new_tokens  # commit 1: one step per token, as many in both
    assert wide.stats.new_tokens == steps
    assert wide.stats.candidates_scored - narrow.stats.candidates_scored == 8 - 2
    [g1] = engine.generate(["hello"], None, SearchConfig(strategy="greedy", max_new_tokens=6))
    [g2] = engine.generate(["hello"], None, SearchConfig(strategy="greedy", max_new_tokens=6, first_top_k=8))
    assert g1.token_ids == g2.token_ids


class DistinctChars(BaseReward):
    """Distinct characters of the text, saturating at 40: like keyword coverage, it only grows
    as text is added, at the tokens that bring something new (the random model's text varies)."""

    name = "distinct"

    def score(self, texts, context):
        return [min(1.0, len(set(t)) / 40) for t in texts]


def _model_logprob(lm, prompt: str, tokens: list[int], finished: bool) -> float:
    ids = lm.format_prompt(prompt)
    seq = tokens + ([min(lm.eos_token_ids)] if finished else [])
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids + seq])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(ids) - 1 + j, t] for j, t in enumerate(seq)))


def test_commit_by_reward_commits_less_where_rewards_disagree_and_keeps_logprobs_exact(tiny_lm, monkeypatch):
    from deal_chains import DeALEngine, SearchConfig
    from search_fixtures import PROMPTS

    retracted: list[list[int]] = []
    original = KVBatch.retract

    def spy(self, per_row):
        retracted.append(list(per_row))
        return original(self, per_row)

    monkeypatch.setattr(KVBatch, "retract", spy)
    engine = DeALEngine(tiny_lm)
    cfg = dict(strategy="deal", top_k=4, beam=2, lookahead=4, lam=8.0, max_new_tokens=20)
    rewards = [DistinctChars()]
    by_reward = engine.generate(PROMPTS, rewards, SearchConfig(**cfg, commit_by_reward=True))
    # some rows committed fewer tokens than others in one step (holes in the shared cache)
    assert any(any(r) for r in retracted)
    for prompt, res in zip(PROMPTS, by_reward):
        # the answer's log-probability is what the model gives its tokens: the holes never leak
        assert res.logprob == pytest.approx(_model_logprob(tiny_lm, prompt, res.token_ids, res.finished), abs=1e-6)
        assert len(res.token_ids) <= 20
    # it searches more steps than the fixed block (it re-searches after each realized gain)
    fixed = engine.generate(PROMPTS, rewards, SearchConfig(**cfg))
    assert sum(r.stats.steps for r in by_reward) > sum(r.stats.steps for r in fixed)


def test_commit_by_reward_keeps_the_block_for_a_reward_that_runs_a_model(tiny_lm, monkeypatch):
    from deal_chains import DeALEngine, SearchConfig
    from search_fixtures import PROMPTS

    class ModelScored(DistinctChars):
        uses_model = True  # re-scoring every prefix would cost a forward each

    retracted: list[list[int]] = []
    original = KVBatch.retract
    monkeypatch.setattr(KVBatch, "retract", lambda self, per_row: (retracted.append(list(per_row)),
                                                                   original(self, per_row))[1])
    engine = DeALEngine(tiny_lm)
    cfg = dict(strategy="deal", top_k=4, beam=2, lookahead=4, lam=8.0, max_new_tokens=20)
    by_reward = engine.generate(PROMPTS, [ModelScored()], SearchConfig(**cfg, commit_by_reward=True))
    fixed = engine.generate(PROMPTS, [ModelScored()], SearchConfig(**cfg))
    assert not any(any(r) for r in retracted)
    assert [r.token_ids for r in by_reward] == [r.token_ids for r in fixed]


@pytest.fixture()
def eos_averse_lm(tiny_model_dir):
    """The tiny model with its end-of-sequence logit lowered: its answers run to the budget."""
    yield from _eos_shifted(tiny_model_dir, -50.0)


def test_commit_by_reward_stays_exact_when_a_stream_ends_one_prompt_early(eos_averse_lm):
    from deal_chains import DeALEngine, SearchConfig
    from search_fixtures import PROMPTS

    engine = DeALEngine(eos_averse_lm)
    cfg = SearchConfig(strategy="deal", top_k=4, beam=2, lookahead=4, lam=8.0, max_new_tokens=24,
                       commit_by_reward=True)
    seen: dict[int, int] = {}

    def on_tokens(i, ids):  # the first prompt's reader hangs up after a few tokens
        seen[i] = seen.get(i, 0) + len(ids)
        return i == 0 and seen[i] >= 6

    results = engine.generate(PROMPTS, [DistinctChars()], cfg, on_tokens=on_tokens)
    assert not results[0].finished and len(results[0].token_ids) < 24
    # the prompts still searching after the first one left keep exact log-probabilities: their
    # rows' per-row commits survive the batch losing a group
    for prompt, res in zip(PROMPTS[1:], results[1:]):
        assert len(res.token_ids) > len(results[0].token_ids)
        assert res.logprob == pytest.approx(_model_logprob(eos_averse_lm, prompt, res.token_ids, res.finished),
                                            abs=1e-6)


@pytest.fixture()
def eos_second_lm(tiny_model_dir):
    """The tiny model with its end-of-sequence always the second choice, 0.5 nats below the
    first: a greedy rollout never ends, but the end is always a candidate."""
    from deal_chains.models import load_model

    lm = load_model(str(tiny_model_dir), device="cpu", dtype="float64")
    eos = min(lm.eos_token_ids)

    def second(module, inputs, output):
        others = output.clone()
        others[..., eos] = float("-inf")
        output[..., eos] = others.max(dim=-1).values - 0.5
        return output

    handle = lm.model.get_output_embeddings().register_forward_hook(second)
    yield lm
    handle.remove()


class Brief(BaseReward):
    """Fewer characters score higher: the reward would end every answer at once."""

    name, weight, terminal = "brief", 1.0, False

    def score(self, texts, context):
        return [1.0 - min(1.0, len(t) / 200) for t in texts]


def test_end_in_lookahead_ends_inside_a_block_where_the_end_is_a_candidate(eos_second_lm):
    from deal_chains import DeALEngine, SearchConfig
    from search_fixtures import PROMPTS

    engine = DeALEngine(eos_second_lm)
    cfg = dict(strategy="deal", top_k=3, beam=2, lookahead=4, lam=8.0, max_new_tokens=21,
               first_top_k=1)  # the first token is never the end: every answer has one token at least
    blocks = engine.generate(PROMPTS, [Brief()], SearchConfig(**cfg))
    inside = engine.generate(PROMPTS, [Brief()], SearchConfig(**cfg, end_in_lookahead=True))
    # without it an answer can end only where a step starts: after 4, 8, ... tokens
    assert all(r.finished and len(r.token_ids) % 4 == 0 for r in blocks)
    # with it, after the first token of the first block: the briefest answer the model allows
    for prompt, res in zip(PROMPTS, inside):
        assert res.finished and res.finish_reason == "stop" and len(res.token_ids) == 1
        # its log-probability is the model's own, the end's included
        assert res.logprob == pytest.approx(_model_logprob(eos_second_lm, prompt, res.token_ids, True), abs=1e-6)
    # the end obeys the candidates' bound: 0.5 nats below the likeliest is outside a 0.25 bound
    bounded = engine.generate(PROMPTS, [Brief()], SearchConfig(**cfg, end_in_lookahead=True, max_logprob_drop=0.25))
    assert not any(r.finished for r in bounded)
    # and the budget: no answer ends past it
    short = engine.generate(PROMPTS, [Brief()], SearchConfig(**{**cfg, "max_new_tokens": 2}, end_in_lookahead=True))
    assert all(len(r.token_ids) <= 1 for r in short if r.finished)


def test_length_penalty_ranks_by_log_probability_per_token(tiny_lm):
    from deal_chains import DeALEngine, SearchConfig
    from deal_chains.search.scoring import finalize
    from deal_chains.search.state import Group, Hypothesis
    from rewards import RewardContext
    from search_fixtures import PROMPTS

    # the answer order: the short answer wins on the sum, the one likelier per token on the mean
    short = Hypothesis(tokens=[5], logprob=-3.0, finished=True)  # 2 tokens with the end: -1.5 each
    longer = Hypothesis(tokens=[5] * 9, logprob=-5.0, finished=True)  # 10 tokens: -0.5 each
    group = Group(prompt_row=0, rewards=[], context=RewardContext(), finished=[short, longer])
    assert finalize(group, tiny_lm.decode, lam=1.0)[0] is short
    assert finalize(group, tiny_lm.decode, lam=1.0, length_penalty=1.0)[0] is longer
    # the search reports the score it ranked by
    engine = DeALEngine(tiny_lm)
    cfg = dict(strategy="deal", top_k=4, beam=2, lookahead=2, lam=2.0, max_new_tokens=10)
    for r in engine.generate(PROMPTS, [CharShare("e")], SearchConfig(**cfg, length_penalty=1.0)):
        assert r.score == pytest.approx(r.logprob / (len(r.token_ids) + r.finished) + 2.0 * r.reward)
    for r in engine.generate(PROMPTS, [CharShare("e")], SearchConfig(**cfg)):
        assert r.score == pytest.approx(r.logprob + 2.0 * r.reward)
