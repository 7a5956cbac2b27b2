"""The server's parts without a server: what a request's spec may name, the missing-extra
message, the command line, the bench's latency figures."""

from __future__ import annotations

import pytest

from deal_chains.bench.serve_load import latency_summary
from deal_chains.cli import build_parser
from deal_chains.serve._deps import MissingDependency, require
from deal_chains.serve.errors import ApiError
from deal_chains.serve.protocol import request_spec
from deal_chains.spec.merge import external_references


def test_external_references_find_files_models_and_bases_at_any_depth():
    spec = {"extends": "base.yaml", "model": "gpt2", "rewards": [
        {"all_of": {"rewards": [{"harmless": {"head": "h.safetensors"}}, {"length": {"max_words": 3}}]}},
        {"judge": {"question": "ok? {text}"}}],
        "steps": {"a": {"rewards": [{"reward_model": {"model": "./rm"}}]}}}
    found = {".".join(map(str, path)): value for path, value in external_references(spec)}
    assert found == {"extends": "base.yaml", "model": "gpt2",
                     "rewards.0.all_of.rewards.0.harmless.head": "h.safetensors",
                     "steps.a.rewards.0.reward_model.model": "./rm"}


def test_a_request_spec_is_loaded_or_refused_naming_the_field():
    assert request_spec({}) is None
    assert request_spec({"preset": "concise"}).rewards
    inline = request_spec({"spec": {"rewards": [{"regex": {"must_match": "e"}}]}})
    assert inline.rewards[0].name == "regex"
    with pytest.raises(ApiError, match=r"deal.spec.rewards.0.json_schema.schema_file") as info:
        request_spec({"spec": {"rewards": [{"json_schema": {"schema_file": "x.json"}}]}})
    assert info.value.status == 400 and info.value.param == "deal.spec.rewards.0.json_schema.schema_file"
    with pytest.raises(ApiError, match="give preset or spec, not both"):
        request_spec({"preset": "concise", "spec": {}})
    with pytest.raises(ApiError, match=r"unknown preset '\.\./x'"):
        request_spec({"preset": "../x"})


def test_a_missing_extra_names_the_install_command():
    with pytest.raises(MissingDependency, match=r"pip install 'deal-chains\[serve\]'"):
        require("no_such_module_for_deal_chains")


def test_serve_and_bench_serve_command_lines():
    args = build_parser().parse_args(["serve", "--spec", "concise", "--api-key", "k", "--max-tokens", "64"])
    assert (args.host, args.port, args.max_tokens, args.api_key) == ("127.0.0.1", 8000, 64, "k")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--timeout", "0"])
    args = build_parser().parse_args(["bench", "serve", "--data", "d.txt", "--clients", "1,2"])
    assert args.clients == [1, 2] and args.n == 16


def test_latency_summary_interpolates():
    assert latency_summary([3.0]) == {"p50": 3.0, "p95": 3.0}
    assert latency_summary([float(i) for i in range(1, 101)]) == {"p50": 50.5, "p95": 95.05}
