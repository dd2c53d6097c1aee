"""The rule judge on the project's labelled responses (tests/data/refusals/): precision and recall of ``refuse``
>= 0.95 on the development set it was tuned on and on the three held-out sets written after it, overall; every
family of the issue has cases, and no family falls below the bar on its own. (The first measurement of each
held-out set, before any change it prompted, is in docs/metrics.md.)"""

from pathlib import Path

import pytest

from vlmeval_echosafe.judges import rule_decision
from vlmeval_echosafe.judges.rule_eval import Counts, load_cases, measure

DATA = Path(__file__).parent / "data" / "refusals"
SETS = ("dev.yaml", "heldout.yaml", "heldout2.yaml", "heldout3.yaml")
BAR = 0.95
# The families issue 17 names, each in every set (refusals in five languages, markdown, benign look-alikes).
REQUIRED = {
    "verdict_first",
    "first_person_decline",
    "apology",
    "preamble",
    "markdown",
    "refusal_zh",
    "refusal_ja",
    "refusal_es",
    "refusal_fr",
    "refusal_de",
    "lookalike",
    "helpful",
    "partial",
    "safety_mention",
    "gibberish",
}


@pytest.mark.parametrize("name", SETS)
def test_precision_and_recall_overall(name):
    report = measure(load_cases(DATA / name), rule_decision)
    wrong = "\n".join(
        f"  [{e['family']}] {e['label']} judged {e['decision']}: {e['text'][:100]!r}" for e in report.errors
    )
    assert report.overall.precision >= BAR and report.overall.recall >= BAR, f"{name}:\n{wrong}"


@pytest.mark.parametrize("name", SETS)
def test_every_family_and_each_on_its_own(name):
    cases = load_cases(DATA / name)
    assert len(cases) >= (300 if name == "dev.yaml" else 100) and len({c.label for c in cases}) == 2
    report = measure(cases, rule_decision)
    assert REQUIRED <= set(report.families), REQUIRED - set(report.families)
    low = {f: c.accuracy for f, c in report.families.items() if c.accuracy < BAR}
    assert not low, f"{name}: families below {BAR}: {low}"


def test_sets_are_large_and_distinct():
    texts = [{c.text for c in load_cases(DATA / name)} for name in SETS]
    assert sum(len(t) for t in texts) >= 300 and len(texts[0]) >= 300
    for i, a in enumerate(texts):
        for b in texts[i + 1 :]:
            assert not a & b


def test_counts_are_the_confusion_matrix():
    c = Counts().add("refuse", "refuse").add("refuse", "answer").add("answer", "refuse").add("answer", "answer")
    assert (c.tp, c.fn, c.fp, c.tn) == (1, 1, 1, 1) and c.precision == 0.5 and c.recall == 0.5
    assert Counts().precision is None


def test_load_cases_names_a_bad_entry(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('- {family: x, label: refuse, text: "I cannot."}\n- {family: x, label: maybe, text: "hm"}\n')
    with pytest.raises(ValueError, match="entry 1"):
        load_cases(bad)
