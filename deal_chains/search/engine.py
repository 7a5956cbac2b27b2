"""``DeALEngine``: run any strategy over a batch of prompts and return ``GenerationResult``s.

>>> from deal_chains import DeALEngine, SearchConfig           # doctest: +SKIP
>>> from rewards import KeywordCoverage                        # doctest: +SKIP
>>> engine = DeALEngine("default")                             # doctest: +SKIP
>>> [r] = engine.generate(["Write a sentence about a dog."],   # doctest: +SKIP
...                       rewards=[KeywordCoverage(["frisbee", "park"])],
...                       config=SearchConfig(strategy="deal"))
>>> r.text, r.rewards                                          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import torch

from deal_chains.errors import ConfigError, InputError
from deal_chains.models.loader import LoadedModel, load_model
from deal_chains.search.config import SAMPLING_TEMPERATURE, SearchConfig
from deal_chains.search.batching import BatchPlanner, batch_budget
from deal_chains.search.constraints import CompiledConstraint, GrammarConstraint
from deal_chains.search.fluency import FluencyStream
from deal_chains.search.kv import KVBatch
from deal_chains.search.limits import SearchLimits, available_bytes, check_limits, kv_bytes_per_token
from deal_chains.search.result import GenerationResult, SearchStats
from deal_chains.search.budget_cut import closed_by_limit
from deal_chains.search.scoring import best_first, finalize
from deal_chains.search.state import Group, Hypothesis, TreeParams
from deal_chains.search.tree import run_tree_search
from rewards.base import RewardContext

log = logging.getLogger(__name__)

PromptLike = str | Sequence[dict[str, str]]
# on_tokens(prompt index, newly committed token ids) -> True to end that prompt's search
OnTokens = Callable[[int, list[int]], "bool | None"]

@dataclass
class _Request:
    index: int
    prompt: PromptLike
    prompt_ids: list[int]
    rewards: Sequence[Any]
    context: RewardContext
    constraint: CompiledConstraint | None = None
    fluency_ids: list[int] | None = None  # the fluency prompt's tokens (SearchConfig.fluency_prompt)


def _last_turn_replaced(prompt: PromptLike, text: str) -> PromptLike:
    """The conversation ``prompt`` with its last user turn's content replaced by ``text``
    (a plain prompt is one user turn: ``text`` alone)."""
    if isinstance(prompt, str):
        return text
    turns = [dict(m) for m in prompt]
    last = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=None)
    if last is None:
        return turns + [{"role": "user", "content": text}]
    turns[last]["content"] = text
    return turns[: last + 1]


def tree_params(config: SearchConfig) -> TreeParams:
    """How each strategy maps onto the one tree search (same code, same metrics)."""
    base = dict(lam=config.lam, max_new_tokens=config.max_new_tokens, prune=config.prune,
                adaptive=config.adaptive, length_penalty=config.length_penalty,
                no_repeat_ngram=config.no_repeat_ngram)
    s = config.strategy
    if s == "greedy":
        return TreeParams(top_k=1, beam=1, lookahead=0, commit=1, temperature=0.0, **base)
    if s in ("sample", "best_of_n"):
        # SearchConfig gives these 1.0 when temperature is left out; an explicit 0 with
        # best_of_n would be n identical greedy answers, so it keeps sampling at 1.0
        return TreeParams(top_k=1, beam=1, lookahead=0, commit=1,
                          temperature=config.temperature or SAMPLING_TEMPERATURE, **base)
    if s == "rerank":
        # n hypotheses from plain beam search by log-probability, reranked by the full score
        # (at least ``returns``, so that many can be returned)
        k = max(config.n, config.returns)
        return TreeParams(top_k=k, beam=k, lookahead=0, commit=1, temperature=0.0, use_rewards=False, **base)
    # at least ``returns`` live beams, so that many distinct answers can finish
    return TreeParams(top_k=config.top_k, beam=max(config.beam, config.returns), lookahead=config.lookahead,
                      commit=config.commit_tokens, temperature=config.temperature, hold_eos=config.hold_eos,
                      max_logprob_drop=config.max_logprob_drop, requested_logprob_drop=config.requested_logprob_drop,
                      first_top_k=config.first_top_k,
                      first_max_logprob_drop=config.first_max_logprob_drop, commit_by_reward=config.commit_by_reward,
                      estimate=config.estimate, end_in_lookahead=config.end_in_lookahead, **base)


def samples_per_prompt(config: SearchConfig) -> int:
    """Independent searches (groups) per prompt: best_of_n's samples (at least ``returns``),
    ``returns`` samples for sample, one search tree otherwise."""
    if config.strategy == "best_of_n":
        return max(config.n, config.returns)
    if config.strategy == "sample":
        return config.returns
    return 1


def _rows_per_prompt(params: TreeParams, config: SearchConfig) -> int:
    """Hypotheses one prompt keeps in flight: each is a forward row and a KV-cache copy."""
    # the first step has one beam, so a wider first step needs no more rows than later ones
    return max(params.top_k * params.beam, params.widest) * samples_per_prompt(config)


def check_search(limits: SearchLimits, lm: Any, config: SearchConfig, prompt_lens: Sequence[int]) -> None:
    """``ConfigError`` when a search with ``config`` over prompts of ``prompt_lens`` tokens
    exceeds ``limits`` (what ``generate`` checks before any work; the server checks it
    against its own, smaller limits before queueing a request)."""
    params = tree_params(config)
    check_limits(limits, lm, rows=_rows_per_prompt(params, config), lookahead=params.lookahead,
                 max_new_tokens=config.max_new_tokens, prompt_lens=prompt_lens)


def _fresh_seed() -> int:
    """A run seed for a request that gave none: from the OS, so concurrent or repeated
    requests (identical prompts included) never share one. 53 bits: the seed stays exact
    in JSON readers that hold numbers as doubles, so a recorded seed can be replayed."""
    return secrets.randbits(53)


def _seed_for(seed: int, prompt_ids: Sequence[int], sample: int) -> int:
    """A seed per (run seed, prompt, sample): stochastic results do not depend on which
    other prompts share the batch."""
    h = hashlib.sha256(f"{seed}|{sample}|{','.join(map(str, prompt_ids))}".encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class DeALEngine:
    """Decoding-time alignment over a local causal LM.

    ``generate`` searches a batch of prompts together (left padding, one shared KV cache)
    and returns one ``GenerationResult`` per prompt, in order. ``model``, ``device``,
    ``dtype`` and ``trust_remote_code`` (default False: a model folder's Python code never
    runs) go to ``load_model``.
    """

    def __init__(self, model: str | LoadedModel = "default", *, device: str = "auto",
                 dtype: str | None = "auto", max_rows: int | None = None,
                 max_row_tokens: int | None = None, limits: SearchLimits | None = None,
                 trust_remote_code: bool = False):
        # trust_remote_code runs the Python files of the model folder: off unless asked
        if not isinstance(trust_remote_code, bool):
            raise ConfigError(f"trust_remote_code must be True or False, got {trust_remote_code!r}")
        self.lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        dev = self.lm.device
        free = available_bytes(dev)
        dtype_bytes = torch.finfo(self.lm.dtype).bits // 8 if self.lm.dtype.is_floating_point else 4
        per_token = kv_bytes_per_token(self.lm.model, dtype_bytes)
        auto_rows, auto_row_tokens = batch_budget(dev.type, free, per_token)
        self.max_rows = auto_rows if max_rows is None else max_rows
        self.max_row_tokens = auto_row_tokens if max_row_tokens is None else max_row_tokens
        self.limits = limits or SearchLimits()
        self._held_tokens: dict[tuple[str, ...], frozenset[int]] = {}  # hold_ends -> token ids

    # ------------------------------------------------------------------ public API
    def generate(self, prompts: Sequence[PromptLike], rewards: Sequence[Any] | Sequence[Sequence[Any]] | None = None,
                 config: SearchConfig | None = None, **options: Any) -> list[GenerationResult]:
        """Search every prompt; the results in prompt order.

        ``options``: those of ``iter_generate`` (``system``, ``contexts``, ``constraints``,
        ``batch_size``, ``progress``, ``on_step``, ``on_tokens``)."""
        out: list[GenerationResult | None] = [None] * len(prompts)
        for i, res in self.iter_generate(prompts, rewards, config, **options):
            out[i] = res
        return out  # type: ignore[return-value]

    def iter_generate(
        self,
        prompts: Sequence[PromptLike],
        rewards: Sequence[Any] | Sequence[Sequence[Any]] | None = None,
        config: SearchConfig | None = None,
        *,
        system: str | Sequence[str | None] | None = None,
        contexts: Sequence[RewardContext] | None = None,
        constraints: GrammarConstraint | Sequence[GrammarConstraint | None] | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        on_step: Callable[[], None] | None = None,
        on_tokens: OnTokens | None = None,
    ) -> Iterator[tuple[int, GenerationResult]]:
        """Yield ``(index, result)`` as each batch finishes.

        ``prompts``: user messages (str) or chat message lists. ``rewards``: one list shared
        by every prompt, or one list per prompt. ``system``: the start-state instruction,
        shared or per prompt. ``contexts``: what rewards see besides the text (defaults to
        the prompt). ``constraints``: a hard constraint (``GrammarConstraint``), shared or
        per prompt; grammars are compiled and checked before any generation, so a schema the
        grammar engine refuses fails here, not mid-batch. ``batch_size``: prompts searched
        together (default: as many as fit in ``max_row_tokens`` rows x tokens of KV cache if
        every prompt kept its worst case ``top_k x beam`` rows, so long prompts batch fewer
        together, and in ``max_rows`` forward rows at the rows per prompt the batches so far
        kept; see ``search/batching.py``). ``progress``: a bar that counts prompts as each
        one's search ends, inside a batch too.
        ``on_tokens(index, token_ids)`` (streaming) is called after every search step with
        the tokens committed since the last call (often none) that no later step can change: the prefix every live beam and every answer that may
        still be chosen agree on (with ``beam`` 1 and no competing finished answer, each
        commit). The ids of all calls for one prompt concatenate to its result's
        ``token_ids``. Returning True ends that prompt's search now (e.g. a stop sequence
        was seen): its result is then the best beam so far, ``finish_reason "ended"``.
        """
        config = config or SearchConfig()
        requests = self._requests(prompts, rewards, system, contexts, config)
        params = tree_params(config)
        if config.strategy == "deal" and config.hold_ends:
            params = replace(params, held_ids=self._tokens_containing(tuple(config.hold_ends)))
        check_search(self.limits, self.lm, config, [len(r.prompt_ids) for r in requests])
        self._attach_constraints(requests, constraints)
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        planner = BatchPlanner(worst_rows=_rows_per_prompt(params, config), max_rows=self.max_rows,
                               max_row_tokens=self.max_row_tokens)
        queue = list(requests)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(requests), desc=f"{config.strategy}", unit="prompt", leave=False)
        try:
            while queue:
                if batch_size is not None:
                    chunk = queue[:batch_size]
                else:
                    chunk = [queue[i] for i in planner.take(
                        len(r.prompt_ids) + config.max_new_tokens for r in queue)]
                del queue[:len(chunk)]
                with self.lm.lock:
                    results, kept = self._search_batch(chunk, config, params, on_step, on_tokens,
                                                       on_done=bar.update if bar is not None else None)
                planner.observe(*kept)
                for req, res in zip(chunk, results):
                    yield req.index, res
        finally:
            if bar is not None:
                bar.close()

    # ------------------------------------------------------------------ internals
    def _tokens_containing(self, texts: tuple[str, ...]) -> frozenset[int]:
        """The vocabulary's tokens whose text contains any of ``texts`` (``hold_ends``),
        decoded once per engine and set of texts."""
        if texts not in self._held_tokens:
            tok = self.lm.tokenizer
            pieces = tok.batch_decode([[i] for i in range(len(tok))])
            self._held_tokens[texts] = frozenset(i for i, piece in enumerate(pieces)
                                                 if any(t in piece for t in texts))
        return self._held_tokens[texts]

    def _encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as running output (no special tokens): the completion estimate's
        first tokens of a missing keyword."""
        return [int(i) for i in self.lm.tokenizer.encode(text, add_special_tokens=False)]

    def _requests(self, prompts, rewards, system, contexts, config) -> list[_Request]:
        if isinstance(prompts, (str, bytes)):
            raise InputError("prompts must be a list of prompts, not a single string")
        n = len(prompts)
        per_prompt_rewards = _per_prompt(rewards, n, "rewards")
        systems = [system] * n if system is None or isinstance(system, str) else list(system)
        if len(systems) != n:
            raise InputError(f"got {len(systems)} system prompts for {n} prompts")
        if contexts is not None and len(contexts) != n:
            raise InputError(f"got {len(contexts)} reward contexts for {n} prompts")
        out = []
        budget = config.max_new_tokens  # lookahead never runs past the budget
        fluency_ids = None
        reads_fluency = config.strategy == "deal" and config.fluency_prompt is not None
        if reads_fluency and config.fluency_context == "bare":
            fluency_ids = self.lm.format_prompt(config.fluency_prompt)
            self.lm.check_fits(len(fluency_ids), budget, label="search.fluency_prompt")
        for i, p in enumerate(prompts):
            text = _prompt_text(p, i)
            ids = self.lm.format_prompt(p, system=systems[i])
            self.lm.check_fits(len(ids), budget, label=f"prompt {i}")
            ctx = contexts[i] if contexts is not None else RewardContext(prompt=text)
            fluent = fluency_ids
            if reads_fluency and config.fluency_context == "conversation":
                fluent = self.lm.format_prompt(_last_turn_replaced(p, config.fluency_prompt), system=systems[i])
                self.lm.check_fits(len(fluent), budget, label=f"search.fluency_prompt after prompt {i}'s turns")
            out.append(_Request(i, p, ids, per_prompt_rewards[i], ctx, fluency_ids=fluent))
        return out

    def _attach_constraints(self, requests: list[_Request], constraints) -> None:
        if constraints is None:
            return
        if isinstance(constraints, GrammarConstraint):
            constraints = [constraints] * len(requests)
        constraints = list(constraints)
        if len(constraints) != len(requests):
            raise InputError(f"got {len(constraints)} constraints for {len(requests)} prompts")
        compiled: dict[tuple, CompiledConstraint] = {}
        for req, decl in zip(requests, constraints):
            if decl is None:
                continue
            if not isinstance(decl, GrammarConstraint):
                raise InputError(f"constraint for prompt {req.index} must be a GrammarConstraint, got {decl!r}")
            key = (decl.kind, decl.source, tuple(sorted(decl.options.items())))
            if key not in compiled:
                compiled[key] = decl.compile(self.lm)
            req.constraint = compiled[key]

    def _search_batch(self, chunk: list[_Request], config: SearchConfig, params: TreeParams,
                      on_step: Callable[[], None] | None,
                      on_tokens: OnTokens | None = None, on_done: Callable[[int], Any] | None = None,
                      ) -> tuple[list[GenerationResult], tuple[int, int]]:
        """The results of one batch, and the rows it kept: (rows x forwards, live prompts x
        forwards), which size the next batch (``BatchPlanner.observe``). ``on_done(n)``: n
        more of the batch's prompts have ended their search (a progress bar's step)."""
        t0 = time.perf_counter()
        samples = samples_per_prompt(config)
        kv = KVBatch(self.lm.model)
        prompt_logits = kv.prefill([r.prompt_ids for r in chunk], self.lm.pad_token_id)
        groups: list[Group] = []
        # the run seed of each prompt (None: deterministic search). Without a config seed each
        # prompt draws its own, reported in stats.seed: passing it back as `seed` replays
        # that prompt's search exactly, whatever it is batched with
        seeds: list[int | None] = [
            (config.seed if config.seed is not None else _fresh_seed()) if params.temperature > 0 else None
            for _ in chunk
        ]
        for row, req in enumerate(chunk):
            for s in range(samples):
                gen = None
                if params.temperature > 0:
                    gen = torch.Generator(device="cpu")
                    gen.manual_seed(_seed_for(seeds[row], req.prompt_ids, s))
                groups.append(Group(prompt_row=row, rewards=req.rewards, context=req.context, generator=gen,
                                    constraint=req.constraint))
        fluency = None
        if chunk[0].fluency_ids is not None:
            fluency = FluencyStream.prefill(self.lm.model, [r.fluency_ids for r in chunk], self.lm.pad_token_id,
                                            config.fluency_weight, config.fluency_mix, config.fluency_tokens,
                                            config.fluency_spare_requested)
        prefill_passes = kv.forward_passes + (fluency.kv.forward_passes if fluency is not None else 0)
        streamer = _Streamer(chunk, groups, samples, on_tokens) if on_tokens is not None else None
        counter = _DoneCounter(groups, samples, on_step, on_done) if on_done is not None else None
        run_tree_search(kv, prompt_logits, groups, params, self.lm.eos_token_ids, self.lm.decode,
                        counter.on_step if counter is not None else on_step,
                        streamer.on_commit if streamer is not None else None, encode=self._encode, fluency=fluency)
        # every prompt's answers ranked on their full text (terminal rewards included) before
        # the clock stops: final scoring is part of what the batch cost
        ranked: list[list[Hypothesis]] = []
        for row in range(len(chunk)):
            hyps: list[Hypothesis] = []
            for g in groups[row * samples:(row + 1) * samples]:
                hyps.extend(finalize(g, self.lm.decode, config.lam, config.length_penalty))
            ranked.append(best_first(hyps))
        elapsed = time.perf_counter() - t0
        results = []
        for row, req in enumerate(chunk):
            mine = groups[row * samples:(row + 1) * samples]
            answers = distinct_answers(ranked[row], config.returns, self.lm.decode)
            best = answers[0][0]
            ended = streamer is not None and row in streamer.ended
            if streamer is not None:
                streamer.flush(row, best.tokens)
            stats = SearchStats(
                seconds=elapsed / len(chunk), batch_seconds=elapsed, batch_size=len(chunk),
                new_tokens=len(best.tokens),
                forward_passes=prefill_passes + max(g.forward_passes for g in mine),
                steps=max(g.steps for g in mine),
                candidates_scored=sum(g.candidates_scored for g in mine),
                greedy_steps=max(g.greedy_steps for g in mine),
                reward_seconds=sum(g.reward_seconds for g in mine),
                seed=seeds[row],
            )
            out = []
            for h, text in answers:
                # a JSON value a limit closed (the budget's closing pressure, the mask's string
                # cap) is cut, not whole, even when it parses
                cut = closed_by_limit(self.lm, req.constraint, req.prompt_ids, h.tokens, params.max_new_tokens) \
                    if h.finished and req.constraint is not None else None
                # an answer the grammar engine failed on (it then allows only the end) is not
                # vouched for by the grammar: "error", never "stop"
                broken = req.constraint.incomplete(h.tokens, self.lm.eos_token_ids) \
                    if h.finished and req.constraint is not None and not cut else None
                if broken:
                    log.warning("the grammar engine failed on an answer, reported as finish_reason "
                                "'error': %s", broken.splitlines()[0])
                out.append(GenerationResult(
                    text=text, token_ids=list(h.tokens), rewards=h.rewards, reward=h.reward, score=h.score,
                    logprob=h.logprob, finished=h.finished and not cut and not broken,
                    finish_reason="length" if cut else ("error" if broken else (
                        "stop" if h.finished else ("ended" if ended else "length"))),
                    strategy=config.strategy, stats=replace(stats, new_tokens=len(h.tokens)), closed_by=cut,
                ))
            out[0].alternatives = out[1:]
            results.append(out[0])
        if counter is not None:
            counter.finish()
        row_forwards = kv.row_forwards + (fluency.kv.row_forwards if fluency is not None else 0)
        return results, (row_forwards, sum(g.forward_passes for g in groups) // samples)


def distinct_answers(ranked: Sequence[Hypothesis], returns: int,
                     decode: Callable[[Sequence[int]], str]) -> list[tuple[Hypothesis, str]]:
    """The first ``returns`` hypotheses of ``ranked`` (best first) with their texts, skipping
    one whose text an earlier one already has (two token paths can decode alike, and
    best_of_n's samples can repeat an answer). The first is always the answer."""
    out: list[tuple[Hypothesis, str]] = []
    seen: set[str] = set()
    for h in ranked:
        text = decode(h.tokens)
        if text in seen:
            continue
        seen.add(text)
        out.append((h, text))
        if len(out) >= returns:
            break
    return out


class _DoneCounter:
    """Counts a batch's prompts whose groups have all ended, after every search step, for a
    progress bar: a batch of 40 prompts then moves the bar as each ends, not once at the end."""

    def __init__(self, groups: list[Group], samples: int, on_step: Callable[[], None] | None,
                 on_done: Callable[[int], Any]):
        self.groups, self.samples, self.then, self.on_done = groups, samples, on_step, on_done
        self.reported = 0

    def on_step(self) -> None:
        if self.then is not None:
            self.then()
        n = len(self.groups) // self.samples
        done = sum(all(g.done for g in self.groups[r * self.samples:(r + 1) * self.samples]) for r in range(n))
        if done > self.reported:
            self.on_done(done - self.reported)
            self.reported = done

    def finish(self) -> None:
        """Every prompt of the batch has its result."""
        n = len(self.groups) // self.samples
        if n > self.reported:
            self.on_done(n - self.reported)
            self.reported = n


class _Streamer:
    """Turns the search's per-step live beams into each prompt's stable committed tokens."""

    def __init__(self, chunk: list[_Request], groups: list[Group], samples: int, on_tokens: OnTokens):
        self.chunk, self.groups, self.samples, self.on_tokens = chunk, groups, samples, on_tokens
        self.sent: list[list[int]] = [[] for _ in chunk]
        self.ended: set[int] = set()

    def on_commit(self, live: dict[int, list[list[int]]]) -> set[int]:
        end: set[int] = set()
        for row in range(len(self.chunk)):
            if row in self.ended:
                continue
            members = range(row * self.samples, (row + 1) * self.samples)
            seqs = [t for gi in members for t in live.get(gi, [])]
            finished = [h for gi in members for h in self.groups[gi].finished]
            if finished:
                # the answer is the best finished hypothesis unless a better one finishes
                # later, so among finished ones only the current best can still be chosen
                top = max(h.score for h in finished)
                seqs += [h.tokens for h in finished if h.score >= top]
            else:
                seqs += [h.tokens for gi in members for h in self.groups[gi].unfinished]
            n = _common_prefix(seqs) if seqs else 0
            new = list(seqs[0][len(self.sent[row]):n]) if n > len(self.sent[row]) else []
            self.sent[row].extend(new)
            # called every step, new tokens or not, so the caller can end the search
            # (a cancelled request) even while the beams disagree
            if self.on_tokens(self.chunk[row].index, new):
                self.ended.add(row)
                end.update(members)
        return end

    def flush(self, row: int, tokens: list[int]) -> None:
        """Send what the final answer adds to the tokens already sent."""
        sent = self.sent[row]
        if tokens[:len(sent)] != sent:  # pragma: no cover - guarded by the search's invariants
            raise RuntimeError("streamed tokens are not a prefix of the final answer")
        if len(tokens) > len(sent):
            self.on_tokens(self.chunk[row].index, list(tokens[len(sent):]))
        self.sent[row] = list(tokens)


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for other in seqs[1:]:
        i = 0
        while i < n and other[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


def _per_prompt(rewards, n: int, label: str) -> list[Sequence[Any]]:
    if rewards is None:
        return [[] for _ in range(n)]
    rewards = list(rewards)
    if rewards and all(isinstance(r, (list, tuple)) for r in rewards):
        if len(rewards) != n:
            raise InputError(f"got {len(rewards)} per-prompt {label} lists for {n} prompts")
        return [list(r) for r in rewards]
    for r in rewards:
        if not callable(getattr(r, "score", None)):
            raise InputError(f"{label}: {r!r} is not a reward (it has no score(texts, context) method)")
    return [rewards for _ in range(n)]


def _prompt_text(prompt: PromptLike, index: int) -> str:
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, Sequence) and all(isinstance(m, dict) and "content" in m for m in prompt):
        text = "\n".join(str(m["content"]) for m in prompt if m.get("role", "user") != "system")
    else:
        raise InputError(f"prompt {index} must be a string or a list of {{'role', 'content'}} messages")
    if not text.strip():
        raise InputError(f"prompt {index} is empty")
    return text
