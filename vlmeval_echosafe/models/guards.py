"""Safety guard models as classifiers of a conversation: a local Hugging Face guard or one behind an
OpenAI-compatible endpoint, and the two output formats the supported guards write.

Formats (the model cards' own):

- ``llama-guard`` (Llama Guard 3 / 3 Vision / 4, meta-llama model cards): the first line is ``safe`` or ``unsafe``;
  if unsafe, a second line lists the violated categories, comma-separated (``unsafe\\nS1,S10``).
- ``qwen3guard`` (Qwen3Guard-Gen, QwenLM/Qwen3Guard README): ``Safety: Safe|Unsafe|Controversial`` then
  ``Categories: ...`` (and, for a response, ``Refusal: Yes|No``), parsed with the README's own patterns.
  "Controversial" counts as unsafe or safe by the ``controversial`` setting (the README's strict / loose modes).

A reply in neither form is ``parsed: False`` and the filter decides it by its ``on_unparsed`` setting (recorded).
With a ``threshold`` the local guard decides by probability instead: one forward pass over the prompt plus
``score_prefix`` gives P(first token of an unsafe label) / P(first token of any label), flagged above the threshold
(the Llama Guard paper's classifier score); the generated text is still recorded.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("llama-guard", "qwen3guard")
_QWEN_LABEL = re.compile(r"Safety: (Safe|Unsafe|Controversial)")
_QWEN_CATEGORIES = re.compile(
    r"(Violent|Non-violent Illegal Acts|Sexual Content or Sexual Acts|PII|Suicide & Self-Harm|Unethical Acts|"
    r"Politically Sensitive Topics|Copyright Violation|Jailbreak|None)"
)
# The label words whose first tokens the threshold mode compares, per format, as they follow `score_prefix`
# (Llama Guard's label opens the reply; Qwen3Guard's follows "Safety:" after a space, so the space is the label's).
LABELS = {
    "llama-guard": {"unsafe": ["unsafe"], "safe": ["safe"]},
    "qwen3guard": {"unsafe": [" Unsafe", " Controversial"], "safe": [" Safe"]},
}


@dataclass(frozen=True)
class GuardSpec:
    """One guard: where its weights are (``model_path``, a ``tiny`` twin, or an endpoint) and how it is read."""

    format: str
    model_path: str | None = None
    tiny: str | None = None  # a key of models.tiny_guards.TINY_AUX
    base_url: str | None = None  # an OpenAI-compatible endpoint serving `served_model`
    served_model: str | None = None
    images: bool = True  # whether the guard is shown the item's images (text-only guards: false)
    add_generation_prompt: bool = True
    prompt_template: str | None = None  # None: the guard's own chat template; else a str.format template
    score_prefix: str = ""  # the text before the label, for the threshold mode ("Safety:" for Qwen3Guard)
    controversial: str = "unsafe"  # qwen3guard: strict (unsafe) or loose (safe)
    max_new_tokens: int = 20
    device: str | None = None
    torch_dtype: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"guard format {self.format!r}; expected one of {FORMATS}")
        if sum(x is not None for x in (self.model_path, self.tiny, self.base_url)) != 1:
            raise ValueError("a guard needs exactly one of model_path, tiny, base_url")
        if self.controversial not in ("unsafe", "safe"):
            raise ValueError(f"controversial={self.controversial!r}; expected unsafe or safe")


@dataclass
class Verdict:
    """What the guard said about one conversation."""

    text: str
    label: str | None
    categories: list[str]
    unsafe: bool | None  # None: the reply is in neither form
    score: float | None = None

    def record(self) -> dict[str, Any]:
        return {
            "reply": self.text,
            "label": self.label,
            "categories": self.categories,
            "unsafe": self.unsafe,
            "score": self.score,
        }


def parse(text: str, fmt: str, controversial: str = "unsafe") -> Verdict:
    """The guard's reply in its format; ``unsafe`` None when it is in neither form."""
    if fmt == "llama-guard":
        lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
        head = lines[0].lower() if lines else ""
        if head not in ("safe", "unsafe"):
            return Verdict(text, None, [], None)
        cats = [c.strip() for c in lines[1].split(",")] if head == "unsafe" and len(lines) > 1 else []
        return Verdict(text, head, cats, head == "unsafe")
    match = _QWEN_LABEL.search(text)
    if match is None:
        return Verdict(text, None, [], None)
    label = match.group(1)
    unsafe = label == "Unsafe" or (label == "Controversial" and controversial == "unsafe")
    return Verdict(text, label, _QWEN_CATEGORIES.findall(text), unsafe)


Turns = list[dict[str, Any]]  # [{"role": "user"|"assistant", "content": [VLMEvalKit items]}]


class LocalGuard:
    """A guard run with transformers: image-text guards through their processor, text-only ones (``images:
    false``) through their tokenizer. Checks a batch of conversations in one left-padded greedy decode."""

    def __init__(self, spec: GuardSpec) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        from .loading import resolve_dtype, resolve_model_path

        self.spec = spec
        if spec.tiny is not None:
            from .tiny_guards import build_tiny_aux

            path = build_tiny_aux(spec.tiny)
        else:
            path = resolve_model_path(spec.model_path)
        self.device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        load = {
            "dtype": resolve_dtype(spec.torch_dtype, self.device),
            "device_map": self.device,
            "trust_remote_code": spec.trust_remote_code,
        }
        if spec.images:
            self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
            self.tokenizer = self.processor.tokenizer
            self.model = AutoModelForImageTextToText.from_pretrained(path, **load).eval()
        else:
            self.processor = self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, **load).eval()
        self.counts: Counter[str] = Counter()  # calls, forward passes, prompt and new tokens over the guard's life

    def _render(self, turns: Turns) -> tuple[str, list[Any]]:
        from PIL import Image

        images, chat = [], []
        for turn in turns:
            parts = []
            for item in turn["content"]:
                if item["type"] == "image" and self.spec.images:
                    with Image.open(item["value"]) as img:
                        images.append(img.convert("RGB"))
                    parts.append({"type": "image"})
                elif item["type"] == "text":
                    parts.append({"type": "text", "text": item["value"]})
            if not self.spec.images:  # a text-only guard's template takes string content
                parts = "\n".join(p["text"] for p in parts)
            chat.append({"role": turn["role"], "content": parts})
        if self.spec.prompt_template is not None:
            conversation = "\n\n".join(
                f"{'User' if t['role'] == 'user' else 'Agent'}: "
                + (t["content"] if isinstance(t["content"], str) else " ".join(p.get("text", "") for p in t["content"]))
                for t in chat
            )
            role = "Agent" if chat[-1]["role"] == "assistant" else "User"
            chat = [{"role": "user", "content": self.spec.prompt_template.format(conversation=conversation, role=role)}]
            if self.spec.images:
                chat[0]["content"] = [
                    *({"type": "image"} for _ in images),
                    {"type": "text", "text": chat[0]["content"]},
                ]
        text = self.processor.apply_chat_template(
            chat, add_generation_prompt=self.spec.add_generation_prompt, tokenize=False
        )
        return text, images

    def _inputs(self, texts: list[str], images: list[list[Any]]) -> Any:
        """The batch; ``images`` per conversation (Mllama's processor takes them nested, the others flat)."""
        kwargs = {"padding": len(texts) > 1, "padding_side": "left", "return_tensors": "pt"}
        if not self.spec.images:
            return self.tokenizer(texts, add_special_tokens=False, **kwargs).to(self.model.device)
        flat = [i for imgs in images for i in imgs]
        given = images if self.model.config.model_type == "mllama" else flat
        batch = self.processor(text=texts, images=given if flat else None, **kwargs)
        return batch.to(device=self.model.device, dtype=self.model.dtype)  # casts floating tensors only

    def check(self, conversations: list[Turns], threshold: float | None = None) -> list[Verdict]:
        """One verdict per conversation (its last turn is the one judged)."""
        import torch

        rendered = [self._render(c) for c in conversations]
        texts, images = [t for t, _ in rendered], [imgs for _, imgs in rendered]
        inputs = self._inputs(texts, images)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, do_sample=False, max_new_tokens=self.spec.max_new_tokens, pad_token_id=pad
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        replies = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        self.counts.update(
            calls=len(texts),
            forwards=new.shape[1] * len(texts),
            prompt_tokens=int(inputs["attention_mask"].sum()),
            new_tokens=int((new != pad).sum()),
        )
        verdicts = [parse(r, self.spec.format, self.spec.controversial) for r in replies]
        if threshold is not None:
            for verdict, score in zip(verdicts, self._scores(texts, images), strict=True):
                verdict.score = score
                verdict.unsafe = score > threshold
        return verdicts

    def _scores(self, texts: list[str], images: list[list[Any]]) -> list[float]:
        """P(an unsafe label's first token) / P(any label's first token) after ``score_prefix``."""
        import torch

        inputs = self._inputs([t + self.spec.score_prefix for t in texts], images)
        with torch.inference_mode():
            probs = self.model(**inputs).logits[:, -1].float().softmax(-1)
        self.counts.update(forwards=len(texts), prompt_tokens=int(inputs["attention_mask"].sum()))
        first = {
            k: sorted({self.tokenizer.encode(w, add_special_tokens=False)[0] for w in words})
            for k, words in LABELS[self.spec.format].items()
        }
        unsafe, safe = probs[:, first["unsafe"]].sum(-1), probs[:, first["safe"]].sum(-1)
        return [float(u / (u + s)) if float(u + s) > 0 else 0.0 for u, s in zip(unsafe, safe, strict=True)]


@dataclass
class ServedGuard:
    """A guard behind an OpenAI-compatible endpoint (vLLM, SGLang): the endpoint applies the guard's own chat
    template. Decides by the generated label only (no probabilities over the wire)."""

    spec: GuardSpec
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        from .served import ServedVLM

        self.client = ServedVLM(
            model=self.spec.served_model or "", base_url=self.spec.base_url or "", max_tokens=self.spec.max_new_tokens
        )

    def check(self, conversations: list[Turns], threshold: float | None = None) -> list[Verdict]:
        if threshold is not None:
            raise ValueError("a served guard decides by its generated label; threshold needs the local backend")
        out = []
        for turns in conversations:
            messages = [
                {
                    "role": t["role"],
                    "content": self.client.turn([i for i in t["content"] if i["type"] == "text" or self.spec.images]),
                }
                for t in turns
            ]
            self.counts.update(calls=1)
            try:
                reply = self.client.complete(messages)
            except Exception as err:  # after the client's retries: an unknown verdict, decided by on_unparsed
                out.append(Verdict(f"guard call failed: {type(err).__name__}: {err}", None, [], None))
                continue
            out.append(parse(reply, self.spec.format, self.spec.controversial))
        return out


def load_guard(spec: GuardSpec) -> LocalGuard | ServedGuard:
    return ServedGuard(spec) if spec.base_url is not None else LocalGuard(spec)
