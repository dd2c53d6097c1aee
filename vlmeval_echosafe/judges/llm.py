"""LLM judge through the host's ``build_judge`` (any OpenAI-compatible endpoint).

Per response: a decision call that never sees the benchmark label, then, only when the decision is the right
behaviour for the label, a quality call (prompt.py). The host's API wrappers return a failure string instead of
raising; that string, like every reply the parser rejects, makes the item ``unknown`` with the reason recorded.

``LOCAL_LLM``: VLMEvalKit's ``build_judge`` then sends every judge request to the model named there, whatever
judge was asked for. Results and the cache are keyed by the judge name, so a mismatch is refused here with a
message rather than recorded under a name that did not judge.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .base import UNKNOWN, Judge, JudgeItem, Judgement, unanswerable
from .prompt import RIGHT, JudgeInputs, parse_decision, parse_quality, quality_prompt

# Judge kwargs that are harness bookkeeping, not arguments of the host's API wrapper.
_NOT_WRAPPER_ARGS = ("nproc", "use_verifier", "use_vllm")
# Judge kwargs that choose what the decision question shows (--judge-args '{"judge_image": true}').
INPUT_OPTIONS = {"judge_image": "image", "judge_key_phrase": "key_phrase"}


class JudgeConfigError(ValueError):
    """No usable judge: raised before inference so no model time is wasted."""


def check_llm_judge_configured(judge_kwargs: dict[str, Any]) -> None:
    """Refuse an API judge that has neither a key nor an endpoint, or that LOCAL_LLM would replace."""
    model = judge_kwargs.get("model")
    local = os.environ.get("LOCAL_LLM")
    if local and local != model:
        raise JudgeConfigError(
            f"LOCAL_LLM={local!r} is set: VLMEvalKit would send every judge request to {local!r}, while results "
            f"and the judgement cache would be recorded under the requested judge {model!r}. Ask for the model "
            f"that judges (--judge {local}) or unset LOCAL_LLM."
        )
    has_key = bool(judge_kwargs.get("key") or os.environ.get("OPENAI_API_KEY"))
    has_base = bool(judge_kwargs.get("api_base") or os.environ.get("OPENAI_API_BASE") or local)
    if not (has_key or has_base):
        raise JudgeConfigError(
            f"judge {model!r} is not configured: set OPENAI_API_KEY (or --judge-key) for an "
            "OpenAI endpoint, or --judge-base-url http://host:port/v1 for a local OpenAI-compatible server "
            "(vLLM, LMDeploy); or use --judge rule for the offline refusal-only judge."
        )


def judge_inputs(judge_kwargs: dict[str, Any]) -> JudgeInputs:
    """The input options among judge kwargs (removing them); each must be true or false."""
    opts = {}
    for key, field in INPUT_OPTIONS.items():
        value = judge_kwargs.pop(key, False)
        if not isinstance(value, bool):
            raise JudgeConfigError(f"judge option {key} must be true or false, got {value!r}")
        opts[field] = value
    return JudgeInputs(**opts)


class LLMJudge(Judge):
    """Decision call without the label, then a quality call for the right behaviour (0-5 score overall)."""

    refusal_only = False

    def __init__(self, model: str, **judge_kwargs: Any) -> None:
        from vlmeval.dataset.utils import build_judge

        self.inputs = judge_inputs(judge_kwargs)
        check_llm_judge_configured({"model": model, **judge_kwargs})
        self.name = model
        self.version = self.inputs.version
        self.wants_image = self.inputs.image
        kwargs = {k: v for k, v in judge_kwargs.items() if k not in _NOT_WRAPPER_ARGS}
        kwargs.setdefault("temperature", 0)
        self._client = build_judge(model=model, **kwargs)
        # build_judge loads VLMEvalKit's .env, which may set LOCAL_LLM only now.
        check_llm_judge_configured({"model": model, **judge_kwargs})
        self._fail_msg = getattr(self._client, "fail_msg", "Failed to obtain answer via API")

    def key_extra(self, item: JudgeItem) -> list[str]:
        return self.inputs.key_extra(item)

    def _ask(self, message: list[dict[str, str]]) -> tuple[str | None, str | None]:
        """(reply, None) or (None, why the call failed)."""
        try:
            raw = self._client.generate(message)
        except Exception as err:  # the host wrappers mostly return a failure string; some paths raise
            return None, f"judge call raised {type(err).__name__}: {err}"
        raw = raw if isinstance(raw, str) else str(raw)
        return (None, "judge call failed") if self._fail_msg.strip() in raw else (raw, None)

    def judge(self, item: JudgeItem) -> Judgement:
        missing = unanswerable(item)
        if missing is not None:
            return missing
        if self.inputs.image and not item.image:
            return Judgement(UNKNOWN, None, error="judge_image is on but the item has no image file")
        message = [dict(type="text", value=self.inputs.decision_prompt(item))]
        if self.inputs.image:
            message.insert(0, dict(type="image", value=item.image))
        raw, failed = self._ask(message)
        if raw is None:
            return Judgement(UNKNOWN, None, error=f"decision: {failed}")
        decision, error = parse_decision(raw)
        raws = {"decision": raw}
        if error:
            return Judgement(UNKNOWN, None, raw=json.dumps(raws), error=f"decision: {error}")
        if decision != RIGHT[item.label]:
            return Judgement(decision, 0.0, raw=json.dumps(raws))  # the wrong behaviour scores 0, no second call
        raw_q, failed = self._ask([dict(type="text", value=quality_prompt(item, decision))])
        if raw_q is None:
            return Judgement(UNKNOWN, None, raw=json.dumps(raws), error=f"quality: {failed}")
        raws["quality"] = raw_q
        score, error = parse_quality(raw_q)
        if error:
            return Judgement(UNKNOWN, None, raw=json.dumps(raws), error=f"quality: {error}")
        return Judgement(decision, float(score), raw=json.dumps(raws))
