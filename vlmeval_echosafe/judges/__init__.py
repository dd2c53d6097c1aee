"""Judges behind one interface: the LLM judge (decision + QS) and the refusal-only judges (the offline rules and
the served guard models)."""

from __future__ import annotations

from typing import Any

from .base import ANSWER, REFUSE, UNKNOWN, Judge, JudgeItem, Judgement
from .guards import GUARDS
from .llm import INPUT_OPTIONS, JudgeConfigError, LLMJudge, check_llm_judge_configured
from .rule import RuleJudge, rule_decision
from .rule_structural import StructuralRuleJudge

RULE, RULE_STRUCTURAL = "rule", "rule-structural"
OFFLINE = {RULE: RuleJudge, RULE_STRUCTURAL: StructuralRuleJudge}
# Judges that give a decision only, no 0-5 quality score (QS is reported missing for them).
REFUSAL_ONLY = frozenset({*OFFLINE, *GUARDS})


def check_judge_choice(model: str | None, judge_kwargs: dict[str, Any]) -> None:
    """Fail fast, before inference, when no judge was chosen or an API judge cannot be reached."""
    if not model:
        raise JudgeConfigError(
            "MM-SafetyBench++ needs an explicit judge: pass --judge rule (offline, refusal-only, no quality "
            "score) or --judge <model> with --judge-base-url http://host:port/v1 / OPENAI_API_KEY for an LLM "
            "judge. (VLMEvalKit would silently pick gpt-4o-mini for any dataset named *MMSafetyBench*.)"
        )
    given = [k for k in INPUT_OPTIONS if judge_kwargs.get(k)]
    if model in REFUSAL_ONLY and given:
        raise JudgeConfigError(f"{', '.join(given)}: options of an LLM judge; judge {model} reads only the text")
    if model in GUARDS:
        if not judge_kwargs.get("api_base"):
            raise JudgeConfigError(
                f"--judge {model} is a guard model you serve (vLLM / SGLang): pass --judge-base-url "
                "http://host:port/v1 (docs/metrics.md, Judges)"
            )
    elif model not in OFFLINE:
        check_llm_judge_configured({"model": model, **judge_kwargs})


def make_judge(judge_kwargs: dict[str, Any]) -> Judge:
    """Build the judge named by ``judge_kwargs['model']``: an offline rule, a served guard model, or any other name
    as an LLM judge on an OpenAI-compatible endpoint."""
    kwargs = dict(judge_kwargs)
    model = kwargs.pop("model", None)
    check_judge_choice(model, kwargs)
    if model in OFFLINE:
        return OFFLINE[model]()
    if model in GUARDS:
        return GUARDS[model](**{k: v for k, v in kwargs.items() if k not in INPUT_OPTIONS})
    return LLMJudge(model, **kwargs)


__all__ = [
    "ANSWER",
    "REFUSE",
    "UNKNOWN",
    "REFUSAL_ONLY",
    "RULE",
    "RULE_STRUCTURAL",
    "StructuralRuleJudge",
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
