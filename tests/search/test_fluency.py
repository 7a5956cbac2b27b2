"""The fluency stream (``SearchConfig.fluency_prompt``): the search ranks by the answer's
log-probability after a second prompt, read exactly through forks, crops and per-row retracts."""

from __future__ import annotations

import string

import pytest
import torch

from deal_chains import DeALEngine, SearchConfig
from deal_chains.errors import ConfigError, PromptTooLongError
from rewards.keywords import KeywordCoverage
from search_fixtures import CharShare

SEARCH = dict(strategy="deal", top_k=3, beam=2, lookahead=3, lam=4.0, max_new_tokens=10)


def _token_logprobs_after(lm, prompt: str, tokens: list[int], finished: bool) -> list[float]:
    """Each token's log-probability (and the end-of-sequence's when finished) after ``prompt``,
    from one forward without a cache (the search reads float32 logits: equal to ~1e-7)."""
    ids = lm.format_prompt(prompt)
    answer = list(tokens) + ([min(lm.eos_token_ids)] if finished else [])
    with torch.no_grad():
        logp = lm.model(input_ids=torch.tensor([ids + answer])).logits[0].double().log_softmax(-1)
    return [float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(answer)]


def _logprob_after(lm, prompt: str, tokens: list[int], finished: bool) -> float:
    return sum(_token_logprobs_after(lm, prompt, tokens, finished))


@pytest.mark.parametrize("commit_by_reward", [False, True])
def test_a_fluency_prompt_equal_to_the_request_changes_nothing(tiny_lm, commit_by_reward):
    engine = DeALEngine(tiny_lm)
    config = SearchConfig(**SEARCH, commit_by_reward=commit_by_reward, returns=2)
    for prompt in ("hello world", "Why?"):
        plain = engine.generate([prompt], [CharShare("e")], config)[0]
        same = engine.generate([prompt], [CharShare("e")], config.updated(fluency_prompt=prompt))[0]
        for a, b in zip([plain, *plain.alternatives], [same, *same.alternatives]):
            assert a.token_ids == b.token_ids
            assert b.score == pytest.approx(a.score, abs=1e-5)
            assert b.logprob == pytest.approx(a.logprob, abs=1e-5)


@pytest.mark.parametrize("commit_by_reward", [False, True])
def test_the_score_ranks_by_the_answers_likelihood_after_the_fluency_prompt(tiny_lm, commit_by_reward):
    engine = DeALEngine(tiny_lm)
    fluency = "Write one short sentence."
    config = SearchConfig(**SEARCH, commit_by_reward=commit_by_reward, returns=2, fluency_prompt=fluency)
    prompts = ["hello world", "a much longer prompt, so the batch is left-padded"]
    results = engine.generate(prompts, [CharShare("e")], config)
    for prompt, best in zip(prompts, results):
        for r in [best, *best.alternatives]:
            # the reported logprob stays the request's; the score's is the fluency prompt's
            assert r.logprob == pytest.approx(_logprob_after(tiny_lm, prompt, r.token_ids, r.finished), abs=1e-5)
            ranked = r.score - config.lam * r.reward
            assert ranked == pytest.approx(_logprob_after(tiny_lm, fluency, r.token_ids, r.finished), abs=1e-5)


def test_the_fluency_weight_mixes_the_two_likelihoods(tiny_lm):
    engine = DeALEngine(tiny_lm)
    prompt, fluency = "hello world", "abc"
    config = SearchConfig(**SEARCH, fluency_prompt=fluency, fluency_weight=0.25)
    r = engine.generate([prompt], [CharShare("e")], config)[0]
    own = _logprob_after(tiny_lm, prompt, r.token_ids, r.finished)
    fluent = _logprob_after(tiny_lm, fluency, r.token_ids, r.finished)
    assert r.score - config.lam * r.reward == pytest.approx(0.75 * own + 0.25 * fluent, abs=1e-5)


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_the_copy_penalty_charges_only_what_the_request_adds(tiny_lm, weight):
    engine = DeALEngine(tiny_lm)
    prompt, fluency = "hello world", "abc"
    config = SearchConfig(**SEARCH, fluency_prompt=fluency, fluency_weight=weight, fluency_mix="copy_penalty",
                          returns=2)
    best = engine.generate([prompt], [CharShare("e")], config)[0]
    for r in [best, *best.alternatives]:
        own = _token_logprobs_after(tiny_lm, prompt, r.token_ids, r.finished)
        fluent = _token_logprobs_after(tiny_lm, fluency, r.token_ids, r.finished)
        # a token the fluency prompt finds likelier costs what the request says, no less
        expected = sum(o - weight * max(0.0, o - f) for o, f in zip(own, fluent))
        assert r.score - config.lam * r.reward == pytest.approx(expected, abs=1e-5)
        # both kinds of token occur, so the penalty differs from the request's and from the blend
        assert any(o > f for o, f in zip(own, fluent)) and any(o < f for o, f in zip(own, fluent))
        blend = sum((1 - weight) * o + weight * f for o, f in zip(own, fluent))
        assert expected < sum(own) and expected < blend


@pytest.mark.parametrize("tokens", [1, 4, 7])
def test_fluency_tokens_reads_the_fluency_prompt_for_the_answers_opening_only(tiny_lm, tokens):
    engine = DeALEngine(tiny_lm)
    prompt, fluency = "hello world", "abc"
    config = SearchConfig(**SEARCH, fluency_prompt=fluency, fluency_tokens=tokens, hold_eos=True)
    r = engine.generate([prompt], [CharShare("e")], config)[0]
    # read up to the end of the commit block that reaches `tokens`; the request's own after it
    block = config.commit_tokens
    read = min(-(-tokens // block) * block, len(r.token_ids) + r.finished)
    assert read < len(r.token_ids)  # the answer goes past the opening, so both parts are tested
    own = _token_logprobs_after(tiny_lm, prompt, r.token_ids, r.finished)
    fluent = _token_logprobs_after(tiny_lm, fluency, r.token_ids, r.finished)
    assert r.score - config.lam * r.reward == pytest.approx(sum(fluent[:read]) + sum(own[read:]), abs=1e-5)


def test_fluency_context_conversation_reads_the_fluency_prompt_after_the_requests_turns(tiny_lm):
    engine = DeALEngine(tiny_lm)
    fluency = "abc"
    shots = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello hello"}]
    prompts = [shots + [{"role": "user", "content": "hello world"}],
               shots + [{"role": "user", "content": "a longer request, so the batch is left-padded"}],
               "why?"]
    config = SearchConfig(**SEARCH, fluency_prompt=fluency, fluency_context="conversation", returns=2)
    results = engine.generate(prompts, [CharShare("e")], config)
    # the request's example turns stay in view; only its last user turn becomes the fluency prompt
    # (a plain prompt is one user turn, so its fluency context is the fluency prompt alone)
    contexts = [shots + [{"role": "user", "content": fluency}]] * 2 + [fluency]
    for prompt, context, best in zip(prompts, contexts, results):
        for r in [best, *best.alternatives]:
            assert r.logprob == pytest.approx(_logprob_after(tiny_lm, prompt, r.token_ids, r.finished), abs=1e-5)
            ranked = r.score - config.lam * r.reward
            assert ranked == pytest.approx(_logprob_after(tiny_lm, context, r.token_ids, r.finished), abs=1e-5)
            if context != fluency:  # the turns change the read (so the test tells the two apart)
                assert ranked != pytest.approx(_logprob_after(tiny_lm, fluency, r.token_ids, r.finished), abs=1e-3)


def test_a_fluency_prompt_read_after_too_long_a_conversation_is_named(tiny_lm):
    # the request fits the tiny model's 256 tokens; its turns with the longer fluency prompt do not
    prompt = [{"role": "user", "content": "a" * 60}, {"role": "assistant", "content": "b" * 60},
              {"role": "user", "content": "hi"}]
    config = SearchConfig(**SEARCH, fluency_prompt="c" * 120, fluency_context="conversation")
    DeALEngine(tiny_lm).generate([prompt], [CharShare("e")], config.updated(fluency_context="bare"))
    with pytest.raises(PromptTooLongError, match="search.fluency_prompt after prompt 0"):
        DeALEngine(tiny_lm).generate([prompt], [CharShare("e")], config)


def test_fluency_spare_requested_ranks_a_requested_words_first_token_by_the_requests_own(tiny_lm):
    engine = DeALEngine(tiny_lm)
    prompt, fluency = "hello world", "abc"
    # one word per letter and digit: the spared tokens are their first tokens (the character,
    # capital or not, or the space before it), so the random model's answers hold spared and
    # unspared tokens alike
    listed = [c * 3 for c in string.ascii_lowercase + string.digits]
    words = KeywordCoverage(listed, inflections=False)
    config = SearchConfig(**SEARCH, fluency_prompt=fluency, fluency_weight=1.0, fluency_mix="copy_penalty",
                          fluency_spare_requested=True, returns=2)
    best = engine.generate([prompt], [words, CharShare("e")], config)[0]
    encode = tiny_lm.tokenizer.encode
    spared = {encode(v, add_special_tokens=False)[0]
              for w in listed for v in (w, " " + w, w.capitalize(), " " + w.capitalize())}
    kinds = set()
    for r in [best, *best.alternatives]:
        own = _token_logprobs_after(tiny_lm, prompt, r.token_ids, r.finished)
        fluent = _token_logprobs_after(tiny_lm, fluency, r.token_ids, r.finished)
        tokens = list(r.token_ids) + ([min(tiny_lm.eos_token_ids)] if r.finished else [])
        expected = sum(o if t in spared else o - max(0.0, o - f) for t, o, f in zip(tokens, own, fluent))
        assert r.score - config.lam * r.reward == pytest.approx(expected, abs=1e-5)
        kinds |= {(t in spared, o > f) for t, o, f in zip(tokens, own, fluent)}
    assert (True, True) in kinds and (False, True) in kinds  # a spared token the penalty would charge


def test_a_fluency_prompt_too_long_for_the_model_is_named(tiny_lm):
    config = SearchConfig(**SEARCH, fluency_prompt="word " * 600)
    with pytest.raises(PromptTooLongError, match="search.fluency_prompt"):
        DeALEngine(tiny_lm).generate(["hello"], [CharShare("e")], config)


@pytest.mark.parametrize("field, value", [("fluency_weight", 1.5), ("fluency_weight", -0.1), ("fluency_prompt", ""),
                                          ("fluency_mix", "geometric"), ("fluency_tokens", 0),
                                          ("fluency_context", "examples")])
def test_bad_fluency_settings_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"search.{field}"):
        SearchConfig.build(**{field: value})
