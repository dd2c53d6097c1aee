"""EchoSafe insights: the only thing the memory keeps, so they are parsed and validated strictly.

An insight is abstract: a scenario type, the cues that signal risk (or its absence), a decision and a one-line
justification. It must not carry the user's request or the model's reply (no raw text in the bank), and it is
length-capped so a long or adversarial reflection cannot grow the prompt of every later item.

The validator is symmetric on purpose: a rule that guards against misuse in one direction only (say, rejecting
"the assistant should help" but storing "the assistant should refuse") lets the bank drift towards refusal and
lowers AR, the over-defence the benchmark measures. Scoped guidance passes in both directions; standing orders
(universal or forward-looking commands to the model) are rejected in both directions.
"""

from __future__ import annotations

import json
import re
from typing import Any

DECISIONS = ("safe", "unsafe")
LIMITS = {"scenario": 200, "signal": 80, "signals": 6, "justification": 300}
COPY_SPAN = 6  # an insight sharing this many consecutive words with the question or answer is a copy
FIELDS = ("Scenario", "Safety signals", "Decision", "Justification")
KEYS = ("scenario", "safety_signals", "decision", "justification")

_WORD = re.compile(r"[a-z0-9']+")

# ---- standing orders ---------------------------------------------------------------------------------------
# Verbs that tell the model how to respond, in both directions.
_RESPOND = (
    r"(?:refuse|decline|reject|deny|turn\s+down|say\s+(?:no|yes)\s+to|answer|respond\s+to|reply\s+to|"
    r"comply(?:\s+with)?|help(?:\s+with)?|assist(?:\s+with)?|fulfil+|obey|follow|accept|grant)"
)
# A universal object: every request, whatever is asked, everything the user says.
_UNIVERSAL = r"(?:all|any|every|each|whatever|everything|anything|anyone|anybody|everyone|everybody)\b"
# What may follow the universal word before its scope: "any (single) (user) request ...".
_OBJECT = (
    r"(?:\s+(?:single|user|incoming|other|of\s+the))?(?:\s+(?:requests?|questions?|quer(?:y|ies)|prompts?|users?|"
    r"instructions?|messages?|tasks?|inputs?|one|thing|time))?"
)
# Words that restrict what follows to a kind of request ("any request involving explosives"): then it is scoped.
_SCOPE = (
    r"(?:about|involving|that|which|who|for|to|related|regarding|concerning|on|asking|seeking|where|with|"
    r"containing|mentioning|of|in\s+which|like|such|from)"
)
_STANDING = [
    # forward-looking: the insight tries to govern every later item
    r"\bfrom\s+now\s+on\b|\bgoing\s+forward\b|\bhenceforth\b|\bfrom\s+this\s+point\b|\bfor\s+the\s+rest\s+of\b",
    r"\b(?:in|for)\s+(?:all\s+)?(?:the\s+)?future\b",
    # orders about memory itself
    r"\b(?:remember|store|save|memori[sz]e|record|keep)\s+(?:this|that|the\s+following)\b",
    r"\b(?:add|write|put)\s+(?:this|it)\s+(?:to|in|into)\s+(?:your\s+|the\s+)?memory\b",
    # overriding the model's instructions
    r"\b(?:ignore|disregard|override|forget|bypass)\b[^.]{0,40}?\b(?:instructions?|rules?|guidelines?|polic(?:y|ies)|"
    r"safety|previous|prior|system)\b",
    # a response verb over a universal object that nothing scopes: "refuse all requests", "answer any question"
    rf"\b{_RESPOND}\s+{_UNIVERSAL}(?!{_OBJECT}\s+{_SCOPE}\b)",
    # unconditional manner: "comply without question", "refuse regardless"
    rf"\b{_RESPOND}\b(?:\s+\w+){{0,2}}?\s+(?:without\s+(?:any\s+)?(?:questions?|exceptions?|hesitation|"
    r"conditions?|limits?)|unconditionally|regardless)\b",
    # "always refuse." / "never help." with nothing after the verb
    rf"\b(?:always|never|unconditionally)\s+{_RESPOND}\s*(?:[.;,!]|$)",
    # "whatever is asked", "no matter what": the unconditional clause itself
    r"\bno\s+matter\s+what\b|\bwhatever\s+(?:is|they|the\s+user)\s+(?:asked|asks|ask|say|says|wants?)\b",
]
_STANDING_ORDER = re.compile("|".join(f"(?:{p})" for p in _STANDING), re.IGNORECASE)
_LINE = re.compile(r"^\s*(scenario|safety signals|signals|decision|justification)\s*:\s*(.*)$", re.IGNORECASE)


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
    body = text.strip()
    if body.startswith("{"):
        return _parse_json(body)
    found: dict[str, str] = {}
    for line in body.splitlines():
        m = _LINE.match(line)
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
    """True when the insight repeats ``span`` consecutive words of any source text."""
    text = " ".join([insight["scenario"], *insight["safety_signals"], insight["justification"]])
    mine = _spans(_words(text), span)
    return any(mine & _spans(_words(src), span) for src in sources if src)


def standing_order(text: str) -> str | None:
    """The phrase that makes ``text`` a standing order to the model, or None for scoped guidance."""
    m = _STANDING_ORDER.search(text)
    return m.group(0) if m else None


def validate_insight(raw: dict[str, Any], question: str, answer: str) -> dict[str, Any]:
    """Return a clean insight or raise InsightError naming the rule it breaks."""
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
    order = standing_order(" ".join([scenario, *signals, justification]))
    if order:
        raise InsightError(f"insight is a standing order to the model ({order!r}; possible memory injection)", "order")
    if copies_source(insight, question, answer):
        raise InsightError(f"insight copies {COPY_SPAN}+ consecutive words of the question or the answer", "copy")
    return insight


def format_insight(insight: dict[str, Any]) -> str:
    """One line per memory entry in the answer prompt."""
    if insight.get("kind") == "exchange":  # the NoReflection ablation stores the raw exchange
        return f'Earlier request: "{insight["question"]}" Earlier reply: "{insight["answer"]}"'
    return (
        f"[{insight['decision']}] {insight['scenario']}. Signals: {', '.join(insight['safety_signals'])}. "
        f"{insight['justification']}"
    )
