"""CommonGen loader and coverage metrics, on the 20-line copy of the dev set."""

from __future__ import annotations

from pathlib import Path

import pytest

from deal_chains.bench.commongen import (
    CommonGenItem,
    commongen_prompt,
    concept_coverage,
    hard_coverage,
    load_commongen,
    soft_coverage,
)

DATA = Path(__file__).parents[1] / "data"
DEV = DATA / "commongen_dev20.txt"
CONS = DATA / "commongen_dev20.constraint.json"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_data_only():
    items = load_commongen(DEV)
    assert len(items) == 20
    first = items[0]
    assert first == CommonGenItem(
        concepts=["field", "stand", "look"],
        references=["The player stood in the field looking at the batter."],
        inflections=None,
    )


def test_load_with_constraints_aligns_forms_to_concepts():
    items = load_commongen(DEV, CONS)
    first = items[0]
    # The constraint lists are ordered field, look, stand; they are re-aligned to the
    # data line's order (field, stand, look) and lower-cased without duplicates.
    assert first.inflections == [
        ["field", "fields"],
        ["stand", "stands", "stood", "standing"],
        ["look", "looks", "looking"],
    ]
    for item in items:
        assert item.inflections is not None and len(item.inflections) == len(item.concepts)
        for concept, forms in zip(item.concepts, item.inflections):
            assert forms[0] == concept and len(set(forms)) == len(forms)


def test_offset_and_n():
    items = load_commongen(DEV, CONS, n=3, offset=2)
    assert [it.concepts for it in items] == [
        ["pet", "couch", "cat"],
        ["climb", "side", "building"],
        ["talk", "climb", "wall"],
    ]
    assert load_commongen(DEV, n=0) == []
    assert len(load_commongen(DEV, offset=18)) == 2
    with pytest.raises(ValueError, match="offset"):
        load_commongen(DEV, offset=-1)
    with pytest.raises(ValueError, match="n must"):
        load_commongen(DEV, n=-2)


def test_references_cover_their_concepts():
    items = load_commongen(DEV, CONS)
    refs = [it.references[0] for it in items]
    assert soft_coverage(refs, items) == 1.0
    assert hard_coverage(refs, items) == 1.0
    # The constraint lists alone miss past tenses: "The mouse climbed the side ..." .
    assert concept_coverage(refs[3], items[3], forms="explicit") == [False, True, True]
    assert hard_coverage(refs, items, forms="explicit") < 1.0
    assert hard_coverage(refs, load_commongen(DEV)) == 1.0


def test_coverage_metrics():
    items = load_commongen(DEV, CONS, n=2)  # field stand look; kid room dance
    texts = ["A man stands in a field.", "Kids dance in their rooms."]
    assert concept_coverage(texts[0], items[0]) == [True, True, False]
    assert concept_coverage(texts[1], items[1]) == [True, True, True]
    assert soft_coverage(texts, items) == pytest.approx((2 / 3 + 1) / 2)
    assert hard_coverage(texts, items) == 0.5
    assert concept_coverage("A cornfield.", items[0]) == [False, False, False]
    with pytest.raises(ValueError, match="1 texts for 2 items"):
        soft_coverage(texts[:1], items)
    with pytest.raises(ValueError, match="forms"):
        concept_coverage("x", items[0], forms="nope")  # type: ignore[arg-type]


def test_duplicate_concept_gets_union_of_sense_lists(tmp_path):
    # Real dev line 355: "paint" occurs twice (noun and verb), with one form list each.
    data = write(tmp_path / "d.txt", " paint picture paint = The artist uses paint to paint a picture.\n")
    cons = write(
        tmp_path / "c.json",
        '[["paints", "Paint", "Paints", "paint"], ["painting", "paints", "Painting", "Paint", "paint"],'
        ' ["Picture", "Pictures", "pictures", "picture"]]\n',
    )
    (item,) = load_commongen(data, cons)
    assert item.inflections[0] == item.inflections[2] == ["paint", "paints", "painting"]
    assert concept_coverage("Painting pictures.", item) == [True, True, True]
    assert concept_coverage("A picture.", item) == [False, True, False]


def test_prompt():
    assert (
        commongen_prompt(["a", "b", "c"])
        == "Write one short sentence that uses all of these words: a, b, c."
    )
    with pytest.raises(ValueError):
        commongen_prompt([])


# --- errors ----------------------------------------------------------------------------


def test_missing_files(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_commongen(missing)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_commongen(DEV, tmp_path / "nope.json")


def test_malformed_data_line(tmp_path):
    data = write(tmp_path / "d.txt", "dog cat = A dog and a cat.\ndog cat no separator\n")
    with pytest.raises(ValueError, match=r"d\.txt:2"):
        load_commongen(data)
    data = write(tmp_path / "e.txt", "dog cat = ok.\n = no concepts\n")
    with pytest.raises(ValueError, match=r"e\.txt:2"):
        load_commongen(data)


def test_mismatched_line_counts(tmp_path):
    data = write(tmp_path / "d.txt", "dog cat = A dog.\nsun sky = The sun.\n")
    cons = write(tmp_path / "c.json", '[["dog", "dogs"], ["cat", "cats"]]\n')
    with pytest.raises(ValueError, match="1 lines.*has 2"):
        load_commongen(data, cons)


@pytest.mark.parametrize(
    "line, match",
    [
        ("not json", "not valid JSON"),
        ('{"dog": ["dogs"]}', "list of lists"),
        ('[["dog", "dogs"]]', "1 form lists for 2 concepts"),
        ('[["dog", "dogs"], ["bird", "birds"]]', "none of the concepts"),
        ('[["dog", 3], ["cat"]]', "list of lists"),
    ],
)
def test_malformed_constraint_line(tmp_path, line, match):
    data = write(tmp_path / "d.txt", "sun sky = The sun.\ndog cat = A dog.\n")
    cons = write(tmp_path / "c.json", '[["sun"], ["sky"]]\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"c\.json:2: .*{match}"):
        load_commongen(data, cons)


def test_blank_lines_ignored_and_crlf(tmp_path):
    data = write(tmp_path / "d.txt", "dog cat = A dog.\r\n\r\nsun sky = The sun.\r\n\n")
    cons = write(tmp_path / "c.json", '[["cat"], ["dog"]]\n[["sky"], ["sun"]]\n')
    items = load_commongen(data, cons)
    assert [it.concepts for it in items] == [["dog", "cat"], ["sun", "sky"]]
    assert items[0].references == ["A dog."]


@pytest.mark.parametrize("text, flags", [
    # the bad outputs
    ("Mower, push, lawn, mow.", {"word_list"}),
    ("Sit, couple, dinner, table.", {"word_list"}),
    ("The stage, performed, routine, music.", {"word_list"}),
    ("A river, a boat, and a paddle.", {"word_list"}),
    ("The food, table, and front of the sit are all all of these words.", {"mentions_instruction"}),
    ("A glass of wine and a table.\n\nIn this sentence, the word sit is used twice.", {"mentions_instruction"}),
    ('A sewing machine. The word "machine" adds a layer of meaning.', {"mentions_instruction"}),
    ("A dog leashes a sidewalk", {"unended"}),
    ("River, boat, paddle", {"word_list", "unended"}),
    # sentences that read well, commas included
    ("The dog caught the frisbee, and the boy threw it.", set()),
    ("A man rides a bike along the trail.", set()),
    ('She said "hello."', set()),
    ("Wait, is the dog, the cat or the bird asleep?", set()),
])
def test_reads_badly_flags_word_lists_instruction_talk_and_fragments(text, flags):
    from deal_chains.bench.commongen import reads_badly

    got = reads_badly(text)
    assert {k for k in ("word_list", "mentions_instruction", "unended") if got[k]} == flags
    assert got["bad"] == bool(flags)


def test_good_rate_counts_answers_with_every_word_that_read_well():
    from deal_chains.bench.commongen import reads_badly
    from deal_chains.bench.runner import good_rate

    texts = ["A dog catches a frisbee.", "Dog, frisbee, catch.", "A dog runs.", "A dog catches a frisbee"]
    coverage = [[True, True, True], [True, True, True], [True, False, False], [True, True, True]]
    outputs = [{"coverage": c, **reads_badly(t)} for t, c in zip(texts, coverage)]
    # the list and the answer without a sentence end read badly; the third misses words
    assert good_rate(outputs) == 0.25
