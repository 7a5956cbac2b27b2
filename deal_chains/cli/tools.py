"""``deal-chains models | demo | train-reward``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from deal_chains.errors import DealChainsError

from deal_chains import train_reward
from deal_chains.cli._args import _device_arg, _fraction
from deal_chains.train_reward import (DEFAULT_EPOCHS, DEFAULT_HIDDEN, DEFAULT_LAYER, DEFAULT_LR, DEFAULT_POOLING,
    DEFAULT_WEIGHT_DECAY, train_command, train_reward_head)


def cmd_models(args: argparse.Namespace) -> int:
    from deal_chains.models.default import (DEFAULT_MODEL_PIP, converted_default_dir, default_gguf_dir)

    try:
        gguf = default_gguf_dir()
        print(f"default: SmolLM2-135M-Instruct (GGUF in {gguf})")
    except DealChainsError:
        print(f"default: not installed ({DEFAULT_MODEL_PIP})")
    conv = converted_default_dir()
    print(f"  converted copy: {conv} ({'present' if (conv / 'model.safetensors').is_file() else 'not yet'})")
    print("any Hugging Face causal-LM id or local directory also works (--model NAME_OR_PATH)")
    return 0


# CommonGen-style sets (three from its dev split) where the preset's greedy answer tends to
# leave a word out
DEMO_SETS = [
    ["dog", "frisbee", "catch", "throw"],
    ["stand", "umbrella", "street", "hold"],
    ["kick", "field", "football", "goal"],
    ["machine", "sew", "thread", "put"],
]


def cmd_demo(args: argparse.Namespace) -> int:
    from deal_chains.bench.commongen import commongen_prompt
    from deal_chains.search.config import SearchConfig
    from deal_chains.search.engine import DeALEngine
    from deal_chains.spec import load_spec
    from rewards.keywords import KeywordCoverage
    from rewards.length import LengthReward

    t = time.perf_counter()
    engine = DeALEngine(args.model, device=args.device)
    print(f"model {engine.lm.name} loaded on {engine.lm.device} in {time.perf_counter() - t:.1f}s\n")
    preset = load_spec("commongen")
    # the preset's request after its example turns, for greedy and DeAL alike
    prompts = [preset.with_examples(commongen_prompt(c)) for c in DEMO_SETS]
    rewards = [[KeywordCoverage(c, name="keywords"), LengthReward(max_words=20, weight=0.3)] for c in DEMO_SETS]
    engine.generate(prompts[:1], rewards[:1], SearchConfig(strategy="greedy", max_new_tokens=2))  # warm-up
    runs = {}
    # DeAL with the commongen preset's search (it holds the sentence end while a word is
    # missing); greedy with the same token budget
    deal = preset.search_config()
    greedy = SearchConfig(strategy="greedy", max_new_tokens=deal.max_new_tokens)
    for name, cfg in (("greedy", greedy), ("deal", deal)):
        t = time.perf_counter()
        runs[name] = (engine.generate(prompts, rewards, cfg), time.perf_counter() - t)
    for i, concepts in enumerate(DEMO_SETS):
        print(f"concepts: {', '.join(concepts)}")
        for name, (results, _) in runs.items():
            r = results[i]
            breakdown = ", ".join(f"{k}={v:.2f}" for k, v in r.rewards.items())
            cut = "" if r.finished else "  [cut: token budget reached]"
            print(f"  {name:6s} {r.text!r}{cut}\n         reward {r.reward:.2f} ({breakdown}), "
                  f"logprob/token {r.mean_logprob:.2f}")
        print()
    g, d = runs["greedy"][1], runs["deal"][1]
    print(f"wall time: greedy {g:.2f}s, deal {d:.2f}s, ratio {d / g:.2f}x "
          f"(4 prompts searched together, same run; the commongen preset's examples and request, "
          f"deal with its search)")
    return 0


def _csv(kind: type) -> Any:
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values
    return parse


def _poolings(text: str) -> list[str]:
    from rewards.harmless import POOLINGS

    values = _csv(str)(text)
    for v in values:
        if v not in POOLINGS:
            raise argparse.ArgumentTypeError(f"pooling must be one of {', '.join(POOLINGS)}, got {v!r}")
    return values


def cmd_train_reward(args: argparse.Namespace) -> int:
    from deal_chains.reward_cv import format_row

    command = train_command(args.pairs, args.out, args.model, args.layer, args.pooling, args.hidden, args.epochs,
                            args.lr, args.weight_decay, args.holdout, args.seed, args.name, args.max_length,
                            cv=args.cv, skip_invalid=args.skip_invalid)
    m = train_reward_head(
        args.pairs, args.out, model=args.model, layer=args.layer, pooling=args.pooling, epochs=args.epochs,
        lr=args.lr, weight_decay=args.weight_decay, hidden=args.hidden, holdout=args.holdout, seed=args.seed,
        name=args.name, max_length=args.max_length, batch_size=args.batch_size, device=args.device,
        progress=not args.quiet, command=command, cv=args.cv, features_cache=args.features_cache,
        skip_invalid=args.skip_invalid,
    )
    for msg in m["skipped"]:
        print(f"skipped: {msg}")
    if m["cv"]:
        print(f"{len(m['cv'])} configurations, {args.cv or 5}-fold cross-validation on the {m['n_train']} "
              "training pairs (best first):")
        for row in m["cv"]:
            print("  " + format_row(row))
        s = m["selected"]
        print(f"selected: layer {s['layer']}, pooling {s['pooling']}, hidden {s['hidden']}, "
              f"weight decay {s['weight_decay']:g} (cv {s['cv_mean']:.4f})")
    print(f"train pairwise accuracy:    {m['train_accuracy']:.4f} ({m['n_train']} pairs)")
    if m["heldout_accuracy"] is None:
        print("held-out pairwise accuracy: - (holdout 0)")
    else:
        print(f"held-out pairwise accuracy: {m['heldout_accuracy']:.4f} ({m['n_heldout']} pairs)")
    print(f"wrote {m['weights']} ({m['weights_bytes'] / 1024:.1f} KiB) and {m['sidecar']} "
          f"in {m['seconds']:.1f}s (features {m['feature_seconds']:.1f}s)")
    return 0


def register_train_reward(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train-reward`` to the ``deal-chains`` subcommands."""
    t = subparsers.add_parser("train-reward", help="train a Bradley-Terry reward head on preference pairs",
                              description=train_reward.__doc__.split("\n\n")[0])
    t.add_argument("--pairs", required=True, nargs="+", help="JSONL pairs: HH-RLHF {chosen, rejected} "
                   "transcripts or {prompt, chosen, rejected}; several files are read in order")
    t.add_argument("--out", required=True, help="output directory for NAME.safetensors + NAME.json")
    t.add_argument("--model", default="default", help="frozen feature model (default: the embedded model)")
    t.add_argument("--layer", type=_csv(int), default=[DEFAULT_LAYER],
                   help="hidden_states index (-1 = last layer); a comma list is swept by cross-validation")
    t.add_argument("--pooling", type=_poolings, default=[DEFAULT_POOLING],
                   help="mean over the response tokens (response), over all tokens (all), or the last token "
                        "(last); a comma list is swept")
    t.add_argument("--hidden", type=_csv(int), default=[DEFAULT_HIDDEN],
                   help="MLP hidden size (0 = linear head); a comma list is swept")
    t.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    t.add_argument("--lr", type=float, default=DEFAULT_LR)
    t.add_argument("--weight-decay", type=_csv(float), default=[DEFAULT_WEIGHT_DECAY],
                   help="L2 penalty; a comma list is swept")
    t.add_argument("--cv", type=int, default=0, help="k-fold cross-validation on the training part "
                   "(default 5 when a setting lists several values; the best is trained and shipped)")
    t.add_argument("--features-cache", default=None, help="safetensors file keeping the extracted features "
                   "for the next run on the same pairs and model")
    t.add_argument("--skip-invalid", action="store_true", help="leave out (and record) invalid pair records")
    t.add_argument("--holdout", type=_fraction, default=0.2, help="fraction of pairs held out (seeded)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name", default="harmless", help="file stem of the head")
    t.add_argument("--max-length", type=int, default=512, help="tokens per conversation (features)")
    t.add_argument("--batch-size", type=int, default=16, help="conversations per feature forward")
    t.add_argument("--device", default="auto")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train_reward)
    return t


def register(sub: Any) -> None:
    """Add ``models``, ``demo`` and ``train-reward`` to the ``deal-chains`` subcommands."""
    m = sub.add_parser("models", help="show the default model and where its converted copy lives")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("demo", help="greedy vs DeAL on a few keyword prompts with the default model")
    d.add_argument("--model", default="default")
    d.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda, cuda:N or mps")
    d.set_defaults(func=cmd_demo)
    register_train_reward(sub)
