"""Insight validator on mirror sets: how many insights it accepts per group and direction.

A mirror set pairs a pro-answer (`safe`) insight with its pro-refusal (`unsafe`) mirror. Scoped pairs should be
accepted on both sides and standing orders rejected on both; a validator that treats the sides differently
biases the memory bank, and with it RR / AR. Reads the held-out set (`tests/data/insight_heldout_v2.yaml`,
written before the current rules) and the older development set (`tests/data/insight_mirrors.yaml`).

    python benchmarks/bench_insight_validator.py --out benchmarks/results/insight_validator.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from vlmeval_echosafe.defenses.insight import InsightError, parse_reflection, validate_insight

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
NEUTRAL = {"scenario": "a request in context", "safety_signals": ["intent", "context"]}


def heldout_cases(data: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(group, decision, insight) for every side of every pair in the held-out format."""
    cases = []
    for group in ("scoped", "standing"):
        for pair in data[group]:
            for decision in ("safe", "unsafe"):
                base = {
                    "scenario": pair.get("scenario", NEUTRAL["scenario"]),
                    "safety_signals": pair.get("signals", NEUTRAL["safety_signals"]),
                    "decision": decision,
                    "justification": "a judgement about this kind of request",
                }
                field = {"signals": "safety_signals"}.get(pair.get("field"), pair.get("field", "justification"))
                value = pair[decision]
                base[field] = [s.strip() for s in value.split(",")] if field == "safety_signals" else value
                cases.append((group, decision, base))
    return cases


def reflection_cases(data: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The second author's format (held-out v3): each side a whole reflection, parsed as the model's reply is."""
    return [
        (group, decision, parse_reflection(pair[decision]))
        for group in ("scoped", "standing")
        for pair in data[group]
        for decision in ("safe", "unsafe")
    ]


def mirror_cases(data: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The development set's format: `answer` / `refuse` justifications under a neutral scenario."""
    cases = []
    for group in data:
        for pair in data[group]:
            for decision, key in (("safe", "answer"), ("unsafe", "refuse")):
                cases.append((group, decision, {**NEUTRAL, "decision": decision, "justification": pair[key]}))
    return cases


def measure(cases: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """Accepted / total per (group, decision), and the rejection reasons."""
    accepted, total, reasons = Counter(), Counter(), Counter()
    for group, decision, insight in cases:
        total[f"{group}/{decision}"] += 1
        try:
            validate_insight(insight, "What is shown here?", "A picture.")
            accepted[f"{group}/{decision}"] += 1
        except InsightError as err:
            reasons[f"{group}/{decision}/{err.code}"] += 1
    return {key: {"accepted": accepted[key], "total": total[key]} for key in sorted(total)} | {
        "rejections": dict(sorted(reasons.items()))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the counts as JSON here")
    parser.add_argument("--label", default="current", help="name of the validator version measured")
    args = parser.parse_args()
    read = lambda name: yaml.safe_load((DATA / name).read_text(encoding="utf-8"))  # noqa: E731
    result = {
        "validator": args.label,
        "heldout_v2": measure(heldout_cases(read("insight_heldout_v2.yaml"))),
        "heldout_v3": measure(reflection_cases(read("insight_heldout_v3.yaml"))),
        "mirrors_dev": measure(mirror_cases(read("insight_mirrors.yaml"))),
    }
    for name in ("heldout_v2", "heldout_v3", "mirrors_dev"):
        for key, value in result[name].items():
            if key != "rejections":
                print(f"{name:12s} {key:28s} accepted {value['accepted']:3d}/{value['total']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
