"""The one JSON lexer against ``json.loads``: on generated documents, on every prefix of them,
on mutated texts, and fed in random pieces."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from deal_chains.jsonkit.lexer import JsonLexer, decode_string_prefix, json_content, lex, scan_prefix

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | \
    st.floats(allow_nan=False, allow_infinity=False, width=32) | _text
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                       max_leaves=12)
_containers = st.lists(_values, max_size=4) | st.dictionaries(_text, _values, max_size=4)


def _dump(value, compact: bool, ascii_only: bool) -> str:
    if compact:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only)
    return json.dumps(value, indent=1, ensure_ascii=ascii_only)


def _loads_ok(text: str) -> bool:
    try:
        json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(_values, st.booleans(), st.booleans())
def test_a_whole_document_is_complete_and_without_error(value, compact, ascii_only):
    text = _dump(value, compact, ascii_only)
    lx = lex(text)
    assert lx.ok and lx.could_end
    assert scan_prefix(text)[:2] == (True, True)


@settings(max_examples=150, deadline=None)
@given(_containers, st.booleans(), st.booleans())
def test_every_proper_prefix_of_a_container_is_open_and_error_free(value, compact, ascii_only):
    text = _dump(value, compact, ascii_only)
    for cut in range(len(text)):
        lx = lex(text[:cut])
        assert lx.ok, (text[:cut], lx.error)
        assert not lx.complete and not lx.could_end
        valid, complete, closed, _ = scan_prefix(text[:cut])
        assert valid and not complete
        # the closed-off part is itself JSON, so a schema can judge what is written so far
        assert closed is None or _loads_ok(closed), closed


@settings(max_examples=400, deadline=None)
@given(_values, st.booleans(), st.integers(0, 10**6), st.sampled_from(list('{}[]",:\\ -0.e1tx\u0001')),
       st.booleans())
def test_a_mutated_text_is_json_exactly_when_the_lexer_says_it_could_end(value, compact, at, ch, insert):
    text = _dump(value, compact, True)
    i = at % (len(text) + 1)
    mutated = text[:i] + ch + text[i:] if insert else text[:i] + text[i + 1:]
    lx = lex(mutated)
    assert lx.could_end == _loads_ok(mutated), (mutated, lx.error)
    # an error is final: no continuation of a broken text is JSON
    if not lx.ok and not lx.could_end:
        assert not _loads_ok(mutated + "]}")


@settings(max_examples=200, deadline=None)
@given(_values, st.booleans(), st.lists(st.integers(1, 7), max_size=40))
def test_feeding_in_pieces_equals_reading_at_once(value, compact, sizes):
    text = _dump(value, compact, False)
    whole = lex(text, collect=True)
    lx, i = JsonLexer(collect=True), 0
    for size in sizes:
        lx = lx.copy().feed(text[i:i + size])  # a copy per piece: states are independent
        i += size
    lx.feed(text[i:])
    for name in ("frames", "expect", "in_string", "error", "value_end", "values", "root_keys"):
        assert getattr(lx, name) == getattr(whole, name), name


def test_a_copy_does_not_share_state_with_its_original():
    a = lex('{"x": [1')
    b = a.copy().feed("]}")
    assert b.complete and not a.complete and a.depth == 2


def test_repeated_keys_are_seen_per_object():
    lx = lex('{"x": 1, "y": {"x": 2}, ')
    assert not lx.repeated_key and lx.root_keys == {"x", "y"}
    assert lx.copy().feed('"y"').repeated_key
    assert not lx.copy().feed('"z"').repeated_key
    assert lex('{"a\\u0062": 1, "ab"').repeated_key  # keys compare decoded


def test_errors_say_where_and_why():
    assert lex('{"a" 1}').error == (5, "'1' where ':' was expected")
    assert lex('[1, 2,]').error == (6, "']' where a value was expected")
    assert lex('"tab\there"').error == (4, "a control character inside a string")
    assert lex('"\\q"').error == (2, "an invalid escape \\q")
    assert lex("01").error is not None and lex("-").ok and not lex("-").could_end


def test_scan_prefix_reports_trailing_text_and_top_level_scalars():
    assert scan_prefix('{"a": 1}  and more') == (True, True, None, 10)
    assert scan_prefix("12") == (True, True, None, 2)
    assert scan_prefix("tru") == (True, False, None, 3)
    assert scan_prefix('{"a": tx')[0] is False


def test_json_content_reads_values_not_keys():
    assert json_content('{"a": "x", "b": [1, "y", null], "c": {"d": "z"}}') == "x\n1\ny\nz"
    assert json_content('{"name": "tool", "arguments": {"name": "kept"}}', skip_keys=["name"]) == "kept"
    assert json_content('{"answer": "It is sun') == "It is sun"
    assert json_content('{"n": 12') == "12"
    assert json_content("plain text") == "plain text"
    assert json_content('["\\ud800"]') == "\ufffd"


def test_decode_string_prefix_stops_before_an_unfinished_escape():
    assert decode_string_prefix('abc\\') == "abc"
    assert decode_string_prefix('\\ud83d') == ""  # waits for the low surrogate
    assert decode_string_prefix('\\ud83d\\ude00!') == "\U0001F600!"
    assert decode_string_prefix('\\uzzzz') is None
    assert decode_string_prefix('\\uz') is None  # broken as soon as a non-hex digit comes
    assert decode_string_prefix('a\\"b", "next": 1') == 'a"b'  # stops at the closing quote
    assert decode_string_prefix('\\ud83d\\ud83d') == "\ud83d"  # the second high half may still be paired


@settings(max_examples=200, deadline=None)
@given(_text, st.booleans())
def test_every_prefix_of_a_string_body_decodes_to_a_prefix_of_the_string(value, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only)[1:]
    decoded = [decode_string_prefix(body[:cut]) for cut in range(len(body) + 1)]
    # complete characters only (never half a surrogate pair), growing, whole once closed
    assert all(d is not None and value.startswith(d) for d in decoded), decoded
    assert decoded[-1] == value and decoded[-2] == value


def test_only_a_collecting_lexer_keeps_string_values():
    # the mask path lexes every row per token: a long string value costs nothing to carry
    lx = lex('{"key": "' + "x" * 10_000)
    assert lx.in_string and lx.raw == "" and lx.root_keys == {"key"}
    assert lex('{"key": "ab\\u00e9', collect=True).partial_string() == "ab\u00e9"
    assert lex('"ab\\u00', collect=True).string_so_far() == "ab"
    assert lex('"ab" tail', collect=True).string_so_far() == "ab"
    assert lex('"a\\q', collect=True).string_so_far() is None
