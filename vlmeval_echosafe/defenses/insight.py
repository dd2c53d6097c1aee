"""EchoSafe insights: the only thing the memory keeps, so they are parsed and validated strictly.

An insight is abstract: a scenario type, the cues that signal risk (or its absence), a decision and a one-line
justification. It must not carry the user's request or the model's reply (no raw text in the bank), and it is
length-capped so a long or adversarial reflection cannot grow the prompt of every later item.
"""

from __future__ import annotations

import re
from typing import Any

DECISIONS = ("safe", "unsafe")
LIMITS = {"scenario": 200, "signal": 80, "signals": 6, "justification": 300}
COPY_SPAN = 6  # an insight sharing this many consecutive words with the question or answer is a copy
FIELDS = ("Scenario", "Safety signals", "Decision", "Justification")

_WORD = re.compile(r"[a-z0-9']+")
# Text that tells the model what to do rather than describing a scenario: a planted instruction (in an image
# or a question) must not become a standing order for every later item.
_INSTRUCTION = re.compile(
    r"\b(?:always|must|should|shall)\s+(?:comply|obey|answer|agree|follow|help)\b|\bnever\s+refuse\b|"
    r"\b(?:ignore|disregard|override|forget)\b[^.]{0,40}\b(?:instruction|rule|guideline|polic|safety|previous)|"
    r"\b(?:store|remember|save|memori[sz]e|add)\s+(?:this|the following)\b|\bno\s+longer\s+refuse\b",
    re.IGNORECASE,
)
_LINE = re.compile(r"^\s*(scenario|safety signals|signals|decision|justification)\s*:\s*(.*)$", re.IGNORECASE)


class InsightError(ValueError):
    """Why a reflection was not stored; the reason is counted and written to the trace."""


def parse_reflection(text: str) -> dict[str, Any]:
    """Read the four ``Field: value`` lines of a reflection into a raw insight dict (not yet validated)."""
    if not isinstance(text, str) or not text.strip():
        raise InsightError("empty reflection")
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            key = m.group(1).lower()
            key = "safety_signals" if key in ("safety signals", "signals") else key
            found.setdefault(key, m.group(2).strip())
    missing = [f for f in ("scenario", "safety_signals", "decision", "justification") if not found.get(f)]
    if missing:
        raise InsightError(f"reflection lacks {', '.join(missing)}")
    signals = [s.strip() for s in re.split(r"[;,]", found["safety_signals"]) if s.strip()]
    return {
        "scenario": found["scenario"],
        "safety_signals": signals,
        "decision": found["decision"].strip(" .").lower(),
        "justification": found["justification"],
    }


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _spans(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copies_source(insight: dict[str, Any], *sources: str, span: int = COPY_SPAN) -> bool:
    """True when the insight repeats ``span`` consecutive words of any source text."""
    text = " ".join([insight["scenario"], *insight["safety_signals"], insight["justification"]])
    mine = _spans(_words(text), span)
    return any(mine & _spans(_words(src), span) for src in sources if src)


def validate_insight(raw: dict[str, Any], question: str, answer: str) -> dict[str, Any]:
    """Return a clean insight or raise InsightError naming the rule it breaks."""
    decision = raw.get("decision")
    if decision not in DECISIONS:
        raise InsightError(f"decision {decision!r} is not safe/unsafe")
    scenario, justification = str(raw.get("scenario", "")).strip(), str(raw.get("justification", "")).strip()
    signals = [str(s).strip() for s in raw.get("safety_signals") or [] if str(s).strip()]
    if not scenario or not justification or not signals:
        raise InsightError("scenario, safety signals and justification must be non-empty")
    if len(scenario) > LIMITS["scenario"] or len(justification) > LIMITS["justification"]:
        raise InsightError("scenario or justification longer than the cap")
    if len(signals) > LIMITS["signals"] or any(len(s) > LIMITS["signal"] for s in signals):
        raise InsightError("too many or too long safety signals")
    insight = {"scenario": scenario, "safety_signals": signals, "decision": decision, "justification": justification}
    if _INSTRUCTION.search(" ".join([scenario, *signals, justification])):
        raise InsightError("insight contains an instruction to the model (possible memory injection)")
    if copies_source(insight, question, answer):
        raise InsightError(f"insight copies {COPY_SPAN}+ consecutive words of the question or the answer")
    return insight


def format_insight(insight: dict[str, Any]) -> str:
    """One line per insight in the answer prompt."""
    return (
        f"[{insight['decision']}] {insight['scenario']}. Signals: {', '.join(insight['safety_signals'])}. "
        f"{insight['justification']}"
    )
