"""GuardFilter: the deployed guard-model filter. A safety classifier checks the request (images + question)
before the model and the exchange (request + answer) after it; a flagged exchange is replaced by a fixed refusal.

The guard (Llama Guard 4, Llama Guard 3 Vision, Qwen3Guard, or any guard writing one of their formats: see
:mod:`..models.guards`), its prompt template, threshold and the refusal text are settings (``wrappers/
defenses.yaml``); each check can be switched off. Items the input check passes are answered exactly as the
undefended model answers them, so a guard that never flags gives the ``Base`` row's answers token for token.

``aux_weights: tiny`` (set for the tiny inner models under ``inner_settings``) swaps the configured guard for its
tiny random-weight twin (``tiny_twin`` in the guard's entry; :mod:`..models.tiny_guards`), so the rows run offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..core.item import Item
from ..models.guards import GuardSpec, Verdict, load_guard
from .batched import BatchedBaseline, counters, inner_cost

REFUSAL = "I'm sorry, but I can't help with that request."


@dataclass(frozen=True)
class GuardFilterSettings:
    guard: dict[str, Any] = field(default_factory=dict)  # GuardSpec fields, plus `tiny_twin`
    input_check: bool = True
    output_check: bool = True
    threshold: float | None = None  # None: the guard's generated label decides; else P(unsafe) > threshold
    refusal: str = REFUSAL
    on_unparsed: str = "block"  # a reply in neither format: block (fail-closed) or pass
    aux_weights: str = "real"  # real | tiny (the guard's tiny random-weight twin)

    def __post_init__(self) -> None:
        if not self.guard:
            raise ValueError("GuardFilter needs a `guard` setting (its model and format)")
        if self.on_unparsed not in ("block", "pass"):
            raise ValueError(f"on_unparsed={self.on_unparsed!r}; expected block or pass")
        if self.aux_weights not in ("real", "tiny"):
            raise ValueError(f"aux_weights={self.aux_weights!r}; expected real or tiny")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold}; expected a probability in [0, 1] or null")
        if not (self.input_check or self.output_check):
            raise ValueError("GuardFilter with both checks off is the Base row; switch one on")

    def spec(self) -> GuardSpec:
        guard = dict(self.guard)
        twin = guard.pop("tiny_twin", None)
        if self.aux_weights == "tiny":
            if twin is None:
                raise ValueError("aux_weights: tiny, but the guard entry names no tiny_twin")
            guard.update(tiny=twin, model_path=None, base_url=None, served_model=None, trust_remote_code=False)
        return GuardSpec(**guard)


class GuardFilter(BatchedBaseline):
    """Input and output checks by a guard model around any inner model."""

    SETTINGS = GuardFilterSettings

    @cached_property
    def guard(self) -> Any:
        """The guard model, loaded at the first check."""
        return load_guard(self.settings.spec())

    def describe(self) -> dict[str, Any]:
        return {"guard": vars(self.settings.spec())}

    def _flagged(self, verdict: Verdict) -> bool:
        return verdict.unsafe if verdict.unsafe is not None else self.settings.on_unparsed == "block"

    def _check(self, conversations: list[list[dict]]) -> tuple[list[Verdict], dict[str, Any]]:
        before = counters(self.guard)
        verdicts = self.guard.check(conversations, self.settings.threshold)
        diff = counters(self.guard) - before
        rows = max(len(conversations), 1)
        cost = {
            "calls": 1,
            "forward_passes": round(diff["forwards"] / rows, 2),
            "prompt_tokens": round(diff["prompt_tokens"] / rows, 2),
            "new_tokens": round(diff["new_tokens"] / rows, 2),
            "shared": rows > 1,
        }
        return verdicts, cost

    def answer_batch(self, items: list[Item]) -> tuple[list[str], list[dict[str, Any]]]:
        s = self.settings
        requests = [[{"role": "user", "content": i.message()}] for i in items]
        records: list[dict[str, Any]] = [{"prompt": i.question, "blocked": None, "cost": {}} for i in items]
        passed = list(range(len(items)))
        if s.input_check:
            verdicts, cost = self._check(requests)
            passed = []
            for n, verdict in enumerate(verdicts):
                records[n]["guard_input"] = verdict.record()
                records[n]["cost"]["guard_input"] = cost
                if self._flagged(verdict):
                    records[n]["blocked"] = "input"
                else:
                    passed.append(n)
        answers = [s.refusal] * len(items)
        if passed:
            before = counters(self.inner)
            plain = self.answer_plain([items[n] for n in passed])
            cost = inner_cost(before, counters(self.inner), len(passed), 1)
            for n, answer in zip(passed, plain, strict=True):
                answers[n] = answer
                records[n]["cost"]["inner"] = cost
        if s.output_check and passed:
            exchanges = [
                [*requests[n], {"role": "assistant", "content": [{"type": "text", "value": answers[n]}]}]
                for n in passed
            ]
            verdicts, cost = self._check(exchanges)
            for n, verdict in zip(passed, verdicts, strict=True):
                records[n]["guard_output"] = verdict.record()
                records[n]["cost"]["guard_output"] = cost
                if self._flagged(verdict):
                    records[n]["blocked"], records[n]["answer_before_filter"] = "output", answers[n]
                    answers[n] = s.refusal
        for record in records:
            checks = [record.get("guard_input"), record.get("guard_output")]
            record["guard_unparsed"] = sum(1 for v in checks if v is not None and v["unsafe"] is None)
        return answers, records
