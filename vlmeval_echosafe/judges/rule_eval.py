"""``python -m vlmeval_echosafe.judges.rule_eval FILE...``: precision and recall of the rule judge on labelled
responses, overall and per family.

A labelled file is a YAML list of ``{family, label, text}`` (label ``refuse`` or ``answer``: what the response
does), optionally with the ``question`` the response answers (handed to a decision function that takes two
arguments). "Positive" is ``refuse``: precision = refusals called correctly / everything called a refusal, recall =
refusals called correctly / all refusals. A family holds one label, so per family the useful number is its
accuracy (the recall of a refusal family, the true-negative rate of an answer family); P and R are printed where
they are defined. ``--rule module:function`` measures another decision function (e.g. an older rule).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from .base import ANSWER, REFUSE

LABELS = (REFUSE, ANSWER)


@dataclass(frozen=True)
class Case:
    family: str
    label: str
    text: str
    question: str = ""


@dataclass(frozen=True)
class Counts:
    """Confusion counts with ``refuse`` as the positive class."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None

    def add(self, label: str, decision: str) -> Counts:
        hit = decision == REFUSE
        if label == REFUSE:
            return Counts(self.tp + hit, self.fp, self.fn + (not hit), self.tn)
        return Counts(self.tp, self.fp + hit, self.fn, self.tn + (not hit))


def load_cases(path: Path) -> list[Case]:
    """The labelled cases of ``path``; an entry without a family, a known label or a non-empty text is an error
    naming its position."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a YAML list of {{family, label, text}}")
    cases = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("label") not in LABELS:
            raise ValueError(f"{path}: entry {i}: needs label refuse|answer, got {entry!r}")
        if not entry.get("family") or not isinstance(entry.get("text"), str) or not entry["text"].strip():
            raise ValueError(f"{path}: entry {i}: needs a family and a non-empty text, got {entry!r}")
        cases.append(Case(str(entry["family"]), entry["label"], entry["text"], str(entry.get("question") or "")))
    return cases


@dataclass
class Report:
    overall: Counts
    families: dict[str, Counts]
    errors: list[dict[str, str]]  # the misjudged cases: family, label, decision, text


def _takes_question(decide: Callable[..., str]) -> bool:
    """Older rules take the response only; the structural rule also takes the question."""
    try:
        return len(inspect.signature(decide).parameters) >= 2
    except (TypeError, ValueError):
        return False


def measure(cases: Iterable[Case], decide: Callable[..., str]) -> Report:
    overall, families, errors = Counts(), {}, []
    with_question = _takes_question(decide)
    for case in cases:
        decision = decide(case.text, case.question) if with_question else decide(case.text)
        overall = overall.add(case.label, decision)
        families[case.family] = families.get(case.family, Counts()).add(case.label, decision)
        if decision != case.label:
            errors.append({"family": case.family, "label": case.label, "decision": decision, "text": case.text})
    return Report(overall, dict(sorted(families.items())), errors)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render(name: str, report: Report) -> str:
    o = report.overall
    lines = [
        f"{name}: {o.n} cases ({o.tp + o.fn} refusals, {o.fp + o.tn} answers)",
        f"  overall precision {_pct(o.precision)}  recall {_pct(o.recall)}  accuracy {_pct(o.accuracy)}",
        f"  {'family':24s} {'n':>4s} {'acc':>6s} {'P':>6s} {'R':>6s}",
    ]
    for fam, c in report.families.items():
        lines.append(f"  {fam:24s} {c.n:4d} {_pct(c.accuracy):>6s} {_pct(c.precision):>6s} {_pct(c.recall):>6s}")
    return "\n".join(lines)


def _load_rule(spec: str) -> Callable[..., str]:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func or "rule_decision")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmeval_echosafe.judges.rule_eval", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="labelled YAML files (tests/data/refusals/*.yaml)")
    parser.add_argument("--rule", default="vlmeval_echosafe.judges.rule:rule_decision", help="module:function")
    parser.add_argument("--errors", action="store_true", help="also print every misjudged case")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    decide = _load_rule(args.rule)
    out = {}
    for path in args.files:
        report = measure(load_cases(path), decide)
        print(render(str(path), report))
        if args.errors:
            for e in report.errors:
                print(f"    [{e['family']}] {e['label']} judged {e['decision']}: {e['text'][:150]!r}")
        fam = {k: {**asdict(c), "precision": c.precision, "recall": c.recall} for k, c in report.families.items()}
        o = report.overall
        out[str(path)] = {
            "rule": args.rule,
            "overall": {**asdict(o), "precision": o.precision, "recall": o.recall},
            "families": fam,
        }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
