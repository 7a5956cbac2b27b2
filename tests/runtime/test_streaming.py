"""Streaming from the search: ``on_tokens`` (engine) and incremental decoding (adapter)."""

from __future__ import annotations

import pytest

from deal_chains import DeALEngine, SearchConfig
from deal_chains.runtime import TextStream
from search_fixtures import PROMPTS, REWARDS

CONFIGS = [
    SearchConfig(strategy="greedy", max_new_tokens=30),
    SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=3, lam=3.0, max_new_tokens=30),
    SearchConfig(strategy="deal", top_k=3, beam=1, lookahead=3, commit=1, lam=3.0, max_new_tokens=30),
    SearchConfig(strategy="sample", temperature=1.0, seed=5, max_new_tokens=20),
    SearchConfig(strategy="best_of_n", n=3, temperature=1.0, seed=5, max_new_tokens=20),
    SearchConfig(strategy="rerank", n=3, max_new_tokens=20),
]


@pytest.fixture(scope="module")
def engine(tiny_lm):
    return DeALEngine(tiny_lm)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.strategy}-beam{c.beam}-commit{c.commit}")
def test_streamed_tokens_concatenate_to_the_result(engine, cfg):
    got: dict[int, list[int]] = {}
    calls: dict[int, int] = {}

    def on_tokens(i, ids):  # called every step, with the tokens committed since the last call
        got.setdefault(i, []).extend(ids)
        calls[i] = calls.get(i, 0) + bool(ids)

    streamed = engine.generate(PROMPTS, REWARDS, cfg, on_tokens=on_tokens)
    plain = engine.generate(PROMPTS, REWARDS, cfg)
    for i, (s, p) in enumerate(zip(streamed, plain)):
        assert got.get(i, []) == s.token_ids  # what was streamed is the answer, in order
        assert s.token_ids == p.token_ids and s.finish_reason == p.finish_reason  # streaming changes nothing
    if cfg.strategy == "greedy":
        # one beam and no competing answer: every commit is streamed as it happens
        assert max(calls.values()) == max(len(r.token_ids) for r in streamed) > 1


def test_on_tokens_can_end_a_prompt_early(engine):
    cfg = SearchConfig(strategy="greedy", max_new_tokens=30)
    full = engine.generate(PROMPTS, None, cfg)
    seen: dict[int, int] = {}

    def stop_after_5(i, ids):
        seen[i] = seen.get(i, 0) + len(ids)
        return seen[i] >= 5

    cut = engine.generate(PROMPTS, None, cfg, on_tokens=stop_after_5)
    ended = [c for c, f in zip(cut, full) if len(f.token_ids) > 5]
    assert ended, "the tiny model's greedy answers are longer than 5 tokens"
    for c, f in zip(cut, full):
        assert c.token_ids == f.token_ids[:len(c.token_ids)]
        if len(f.token_ids) > 5:
            assert c.finish_reason == "ended" and len(c.token_ids) == 5 and not c.finished
            assert c.stats.forward_passes < f.stats.forward_passes


def test_text_stream_never_splits_a_multibyte_character(tiny_lm):
    text = "héllo 你好 wörld 🙂!"
    ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode())  # one token per byte: characters do get split
    stream = TextStream(tiny_lm.decode)
    pieces = [stream.feed([t])[0] for t in ids]
    pieces.append(stream.finish(ids))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@pytest.mark.parametrize("stops,expected", [(["wör"], "héllo 你好 "), (["xyz", "好 w"], "héllo 你"),
                                            (["!"], "héllo 你好 wörld 🙂"), (["zzz"], "héllo 你好 wörld 🙂!")])
@pytest.mark.parametrize("chunk", [1, 3, 5], ids=lambda n: f"{n}-token commits")
def test_text_stream_cuts_at_the_first_stop_sequence(tiny_lm, stops, expected, chunk):
    # one token per byte, fed a commit of ``chunk`` tokens at a time: stop sequences and
    # characters are split across tokens and across commits
    text = "héllo 你好 wörld 🙂!"
    ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tiny_lm.decode, stops)
    pieces, stopped = [], False
    for start in range(0, len(ids), chunk):
        delta, stopped = stream.feed(ids[start:start + chunk])
        pieces.append(delta)
        # text that could be the start of a stop sequence is held back, never sent and retracted
        assert not any(s in "".join(pieces) for s in stops)
        if stopped:
            break
    pieces.append(stream.finish(ids))
    assert "".join(pieces) == expected == stream.sent
    assert stopped == (expected != text)
    assert stream.stop_sequence == (None if expected == text else next(s for s in stops if s in text))
