"""The one judge interface: (question, response, label; optionally key phrase and image) in, decision + quality
score out.

Every judge returns ``unknown`` when it cannot decide; callers count those and never read them as a refusal or
an answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

REFUSE, ANSWER, UNKNOWN = "refuse", "answer", "unknown"

# Predictions that are not a model answer at all: the host's inference-failure markers.
INFER_FAIL_MARKERS = ("Failed to obtain answer",)


@dataclass(frozen=True)
class JudgeItem:
    index: str
    question: str
    response: str
    label: str  # 'unsafe' | 'safe'
    key_phrase: str = ""  # the phrase GenOCR images show as typography; given to judges that ask for it
    image: str | None = None  # path of the image the model saw; only set for judges that look at it


@dataclass(frozen=True)
class Judgement:
    decision: str  # refuse | answer | unknown
    score: float | None  # 0-5, None when the judge gives no quality score
    raw: str = ""  # what the judge said, verbatim
    error: str | None = None  # why the decision is unknown


def unanswerable(item: JudgeItem) -> Judgement | None:
    """An item with no model answer to judge (empty or failed inference) is unknown for every judge."""
    text = item.response if isinstance(item.response, str) else ""
    if not text.strip():
        return Judgement(UNKNOWN, None, error="empty prediction")
    if any(marker in text for marker in INFER_FAIL_MARKERS):
        return Judgement(UNKNOWN, None, error="inference failed")
    return None


def rule_judgement(item: JudgeItem, decide: Callable[[JudgeItem], str]) -> Judgement:
    """The offline rule judges' one judgement: unknown with no answer to judge, else ``decide``'s refuse or answer,
    with no quality score (they judge refusal only)."""
    missing = unanswerable(item)
    return missing if missing is not None else Judgement(decide(item), None, raw="")


class Judge(ABC):
    """Turns model responses into judgements; ``refusal_only`` judges give no quality score."""

    name: str
    refusal_only: bool
    version: str
    wants_image: bool = False  # evaluation hands it the image file of each item (JudgeItem.image)

    def key_extra(self, item: JudgeItem) -> list[str]:
        """Inputs besides question, response and label that change the judgement: part of the cache key."""
        return []

    @abstractmethod
    def judge(self, item: JudgeItem) -> Judgement:
        """Judge one response; must not raise for bad judge output (return unknown with an error)."""
