"""Fuzzed spec files: whatever the text, loading a spec either succeeds or raises a
``SpecError`` whose every problem names the file and a line — never another exception,
never a hang, never an object built from a YAML tag."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deal_chains.errors import SpecError
from deal_chains.spec import load_spec

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID = {
    "version": 1,
    "model": "default",
    "search": {"strategy": "deal", "top_k": 4, "lookahead": 3, "beam": 2, "lam": 8.0, "max_new_tokens": 32},
    "system": "Use the words {concepts}.",
    "rewards": [
        {"keywords": {"words": "{concepts}", "inflections": True}, "weight": 1.0},
        {"length": {"max_words": 20}, "weight": 0.5},
        {"regex": {"must_not_match": ["(a+)+$"]}},
        {"json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "integer"}}}, "mode": "soft"}},
    ],
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["{concepts}", "deal", "hard", "-1", "1e309", "~"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


def _mutate(doc, path, value, mode):
    import copy

    doc = copy.deepcopy(doc)
    node = doc
    for k in path[:-1]:
        node = node[k]
    last = path[-1]
    if mode == "replace":
        node[last] = value
    elif mode == "delete":
        del node[last]
    elif mode == "add" and isinstance(node, dict):
        node[f"{last}_typo"] = value
    return doc


def _check(path, text):
    try:
        spec = load_spec(path)
    except SpecError as exc:
        assert exc.errors, text
        for problem in exc.errors:
            assert problem["file"] == str(path), (problem, text)
            assert isinstance(problem["line"], int) and problem["line"] >= 1, (problem, text)
            assert problem["message"], (problem, text)
        assert str(path) in str(exc)
        return None
    return spec


@FUZZ
@given(text=st.text(alphabet=string.printable + "äé€\u2028", max_size=300))
def test_random_text_is_a_spec_or_a_located_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    _check(path, text)


@FUZZ
@given(path=st.sampled_from(ALL_PATHS), value=values, mode=st.sampled_from(["replace", "delete", "add"]))
def test_mutated_valid_spec_is_a_spec_or_a_located_error(tmp_path_factory, path, value, mode):
    doc = _mutate(VALID, path, value, mode)
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    file = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    file.write_text(text, encoding="utf-8")
    spec = _check(file, text)
    if mode == "add" and "schema" not in path[:-1] and doc != VALID:
        assert spec is None, f"a misspelt key was silently accepted: {path}"


@FUZZ
@given(tag=st.sampled_from(["!!python/object/apply:os.system", "!!python/name:os.system", "!!binary",
                            "!!python/object/new:dict", "!custom", "!!set", "!!omap"]),
       where=st.sampled_from(["system", "model", "rewards"]))
def test_object_tags_are_refused_anywhere(tmp_path_factory, tag, where):
    text = yaml.safe_dump(VALID, sort_keys=False).replace(f"{where}:", f"{where}: {tag}", 1)
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert any("not allowed" in p["message"] or "tag" in p["message"] for p in info.value.errors), info.value


def test_unknown_keys_are_errors_at_every_level(tmp_path):
    for path in ALL_PATHS:
        doc = _mutate(VALID, path, 1, "add")
        if doc == VALID:
            continue
        file = tmp_path / "spec.yaml"
        file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        key = f"{path[-1]}_typo"
        parent = path[:-1]
        node = VALID
        for k in parent:
            node = node[k]
        if not isinstance(node, dict) or "schema" in parent:
            continue  # inside a JSON schema, extra keys are the schema's business
        with pytest.raises(SpecError) as info:
            load_spec(file)
        assert key in str(info.value), (path, str(info.value))


def test_alias_bomb_and_huge_file_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb, encoding="utf-8")
    with pytest.raises(SpecError, match="anchors and aliases are not allowed"):
        load_spec(path)
    big = tmp_path / "big.yaml"
    big.write_text("system: '" + "x" * (2 * 1024 * 1024) + "'\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(big)
    assert "big.yaml" in str(info.value)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_search_weights_refused(value):
    with pytest.raises(SpecError, match=r"search\.lam"):
        load_spec(f"search: {{lam: {value}}}\nrewards: [{{length: {{max_words: 3}}}}]")
