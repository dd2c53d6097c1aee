"""LLM judge through the host's ``build_judge`` (any OpenAI-compatible endpoint).

The host's API wrappers return a failure string instead of raising; that string, like every reply the parser
rejects, becomes ``unknown`` with the reason recorded.
"""

from __future__ import annotations

import os
from typing import Any

from .base import UNKNOWN, Judge, JudgeItem, Judgement, unanswerable
from .prompt import PROMPT_VERSION, build_judge_prompt, parse_judge_output

# Judge kwargs that are harness bookkeeping, not arguments of the host's API wrapper.
_NOT_WRAPPER_ARGS = ("nproc", "use_verifier", "use_vllm")


class JudgeConfigError(ValueError):
    """No usable judge: raised before inference so no model time is wasted."""


def check_llm_judge_configured(judge_kwargs: dict[str, Any]) -> None:
    """Refuse an API judge that has neither a key nor an endpoint to talk to."""
    has_key = bool(judge_kwargs.get("key") or os.environ.get("OPENAI_API_KEY"))
    has_base = bool(judge_kwargs.get("api_base") or os.environ.get("OPENAI_API_BASE") or os.environ.get("LOCAL_LLM"))
    if not (has_key or has_base):
        raise JudgeConfigError(
            f"judge {judge_kwargs.get('model')!r} is not configured: set OPENAI_API_KEY (or --judge-key) for an "
            "OpenAI endpoint, or --judge-base-url http://host:port/v1 for a local OpenAI-compatible server "
            "(vLLM, LMDeploy); or use --judge rule for the offline refusal-only judge."
        )


class LLMJudge(Judge):
    """One judge call per response: decision + 0-5 quality score (rubric in prompt.py)."""

    refusal_only = False
    version = PROMPT_VERSION

    def __init__(self, model: str, **judge_kwargs: Any) -> None:
        from vlmeval.dataset.utils import build_judge

        check_llm_judge_configured({"model": model, **judge_kwargs})
        self.name = model
        kwargs = {k: v for k, v in judge_kwargs.items() if k not in _NOT_WRAPPER_ARGS}
        kwargs.setdefault("temperature", 0)
        self._client = build_judge(model=model, **kwargs)
        self._fail_msg = getattr(self._client, "fail_msg", "Failed to obtain answer via API")

    def judge(self, item: JudgeItem) -> Judgement:
        missing = unanswerable(item)
        if missing is not None:
            return missing
        try:
            raw = self._client.generate(build_judge_prompt(item.question, item.response, item.label))
        except Exception as err:  # the host wrappers mostly return a failure string; some paths raise
            return Judgement(UNKNOWN, None, error=f"judge call raised {type(err).__name__}: {err}")
        raw = raw if isinstance(raw, str) else str(raw)
        if self._fail_msg.strip() in raw:
            return Judgement(UNKNOWN, None, raw=raw, error="judge call failed")
        decision, score, error = parse_judge_output(raw, item.label)
        return Judgement(decision, None if score is None else float(score), raw=raw, error=error)
