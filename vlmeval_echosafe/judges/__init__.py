"""Judges behind one interface: the LLM judge (decision + QS) and the refusal-only rule judge."""

from __future__ import annotations

from typing import Any

from .base import ANSWER, REFUSE, UNKNOWN, Judge, JudgeItem, Judgement
from .llm import INPUT_OPTIONS, JudgeConfigError, LLMJudge, check_llm_judge_configured
from .rule import RuleJudge, rule_decision

RULE = "rule"


def check_judge_choice(model: str | None, judge_kwargs: dict[str, Any]) -> None:
    """Fail fast, before inference, when no judge was chosen or an API judge cannot be reached."""
    if not model:
        raise JudgeConfigError(
            "MM-SafetyBench++ needs an explicit judge: pass --judge rule (offline, refusal-only, no quality "
            "score) or --judge <model> with --judge-base-url http://host:port/v1 / OPENAI_API_KEY for an LLM "
            "judge. (VLMEvalKit would silently pick gpt-4o-mini for any dataset named *MMSafetyBench*.)"
        )
    if model == RULE:
        given = [k for k in INPUT_OPTIONS if judge_kwargs.get(k)]
        if given:
            raise JudgeConfigError(f"{', '.join(given)}: options of an LLM judge; the rule judge reads only the text")
    else:
        check_llm_judge_configured({"model": model, **judge_kwargs})


def make_judge(judge_kwargs: dict[str, Any]) -> Judge:
    """Build the judge named by ``judge_kwargs['model']`` (``rule`` or an OpenAI-compatible model name)."""
    kwargs = dict(judge_kwargs)
    model = kwargs.pop("model", None)
    check_judge_choice(model, kwargs)
    return RuleJudge() if model == RULE else LLMJudge(model, **kwargs)


__all__ = [
    "ANSWER",
    "REFUSE",
    "UNKNOWN",
    "RULE",
    "Judge",
    "Judgement",
    "JudgeItem",
    "JudgeConfigError",
    "LLMJudge",
    "RuleJudge",
    "check_judge_choice",
    "make_judge",
    "rule_decision",
]
