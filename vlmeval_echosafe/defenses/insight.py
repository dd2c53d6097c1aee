"""EchoSafe insights: the only thing the memory keeps, so they are parsed and validated strictly.

An insight is abstract: a scenario type, the cues that signal risk (or its absence), a decision and a one-line
justification. It must not carry the user's request or the model's reply (no raw text in the bank), and it is
length-capped so a long or adversarial reflection cannot grow the prompt of every later item.

The validator is symmetric by construction: a rule that guards against misuse in one direction only (say,
rejecting "the assistant should help" but storing "the assistant should refuse") lets the bank drift towards
refusal and lowers AR, the over-defence the benchmark measures. Standing orders (`insight_orders`) are found on a
canonical text in which both directions are one token, so scoped guidance and standing orders get the same
verdict whichever way they point.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .insight_orders import standing_order

DECISIONS = ("safe", "unsafe")
LIMITS = {"scenario": 200, "signal": 80, "signals": 6, "justification": 300}
COPY_SPAN = 6  # an insight sharing this many consecutive words with the question or answer is a copy
FIELDS = ("Scenario", "Safety signals", "Decision", "Justification")
KEYS = ("scenario", "safety_signals", "decision", "justification")

_WORD = re.compile(r"[a-z0-9']+")
_LINE = re.compile(r"^\s*(scenario|safety signals|signals|decision|justification)\s*:\s*(.*)$", re.IGNORECASE)
# Markdown a free-text reflection may wrap the form in: heading marks, bullets or numbering, emphasis.
_MARKUP_LEAD = re.compile(r"^\s*(?:#{1,6}\s+|>\s*)?(?:(?:[-*+\u2022]|\d{1,2}[.)])\s+)?")
_EMPHASIS = re.compile(r"(?<!\w)(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_FENCE = re.compile(r"^```[\w-]*\s*$", re.MULTILINE)


class InsightError(ValueError):
    """Why a reflection was not stored; ``code`` is the short reason counted in reports."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def parse_reflection(text: str) -> dict[str, Any]:
    """Read a reflection into a raw insight dict (not yet validated).

    Two serialisations of the same form are accepted, strictly: the four ``Field: value`` lines (what the
    plugin's constrained decoding produces, and what chat models are asked for), or one JSON object with the keys
    ``scenario``, ``safety_signals`` (list or comma-separated string), ``decision``, ``justification`` (what a
    served endpoint returns under a JSON schema)."""
    if not isinstance(text, str) or not text.strip():
        raise InsightError("empty reflection", "empty")
    body = _FENCE.sub("", text).strip()
    if body.startswith("{"):
        return _parse_json(body)
    found: dict[str, str] = {}
    for line in body.splitlines():
        m = _LINE.match(plain_line(line))
        if m:
            key = m.group(1).lower()
            key = "safety_signals" if key in ("safety signals", "signals") else key
            found.setdefault(key, m.group(2).strip())
    missing = [f for f in KEYS if not found.get(f)]
    if missing:
        raise InsightError(f"reflection lacks {', '.join(missing)}", "parse")
    return {
        "scenario": found["scenario"],
        "safety_signals": _signals(found["safety_signals"]),
        "decision": found["decision"].strip(" .").lower(),
        "justification": found["justification"],
    }


def plain_line(line: str) -> str:
    """One line of a reflection without Markdown: "**Decision:** *unsafe*" reads as "Decision: unsafe".

    Free-text backends (chat, one message, an endpoint without a JSON schema) often wrap the form in emphasis,
    bullets or headings, which the constrained path never produces; removing them here gives every backend one
    acceptance rule."""
    previous = None
    line = _MARKUP_LEAD.sub("", line)
    while previous != line:
        previous, line = line, _EMPHASIS.sub(r"\2", line)
    return line.replace("**", "").replace("__", "").strip()


def _signals(value: Any) -> list[str]:
    items = value if isinstance(value, list) else re.split(r"[;,]", str(value))
    return [str(s).strip() for s in items if str(s).strip()]


def _parse_json(body: str) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as err:
        raise InsightError(f"reflection is not valid JSON ({err.msg})", "parse") from err
    if not isinstance(obj, dict):
        raise InsightError("reflection JSON is not an object", "parse")
    missing = [k for k in KEYS if not obj.get(k)]
    if missing:
        raise InsightError(f"reflection lacks {', '.join(missing)}", "parse")
    return {
        "scenario": str(obj["scenario"]),
        "safety_signals": _signals(obj["safety_signals"]),
        "decision": str(obj["decision"]).strip(" .").lower(),
        "justification": str(obj["justification"]),
    }


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _spans(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copies_source(insight: dict[str, Any], *sources: str, span: int = COPY_SPAN) -> bool:
    """True when the insight, as rendered, repeats ``span`` consecutive words of any source text."""
    mine = _spans(_words(format_insight(insight)), span)
    return any(mine & _spans(_words(src), span) for src in sources if src)


def validate_insight(raw: dict[str, Any], question: str, answer: str) -> dict[str, Any]:
    """Return a clean insight or raise InsightError naming the rule it breaks.

    The content rules read the insight exactly as `format_insight` renders it into later prompts, so the text
    checked is the text the model sees (no cue that passes as one field and reads as an order once joined)."""
    decision = raw.get("decision")
    if decision not in DECISIONS:
        raise InsightError(f"decision {decision!r} is not safe/unsafe", "decision")
    scenario, justification = str(raw.get("scenario", "")).strip(), str(raw.get("justification", "")).strip()
    signals = [str(s).strip() for s in raw.get("safety_signals") or [] if str(s).strip()]
    if not scenario or not justification or not signals:
        raise InsightError("scenario, safety signals and justification must be non-empty", "empty")
    if len(scenario) > LIMITS["scenario"] or len(justification) > LIMITS["justification"]:
        raise InsightError("scenario or justification longer than the cap", "length")
    if len(signals) > LIMITS["signals"] or any(len(s) > LIMITS["signal"] for s in signals):
        raise InsightError("too many or too long safety signals", "length")
    insight = {"scenario": scenario, "safety_signals": signals, "decision": decision, "justification": justification}
    order = standing_order(format_insight(insight))
    if order:
        raise InsightError(f"insight is a standing order to the model ({order!r}; possible memory injection)", "order")
    if copies_source(insight, question, answer):
        raise InsightError(f"insight copies {COPY_SPAN}+ consecutive words of the question or the answer", "copy")
    return insight


def format_insight(insight: dict[str, Any]) -> str:
    """One line per memory entry in the answer prompt; the validator checks this same string."""
    if insight.get("kind") == "exchange":  # the NoReflection ablation stores the raw exchange
        return f'Earlier request: "{insight["question"]}" Earlier reply: "{insight["answer"]}"'
    return (
        f"[{insight['decision']}] {insight['scenario']}. Signals: {', '.join(insight['safety_signals'])}. "
        f"{insight['justification']}"
    )
