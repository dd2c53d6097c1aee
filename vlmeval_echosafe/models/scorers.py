"""The two scorers ETA reads: a CLIP image-text score and a reward model's score of an exchange.

Both load from a Hugging Face id or folder, or build their tiny random-weight twin (``tiny``:
:mod:`.tiny_guards`), and count what they run (``counts``: calls, forward passes, tokens) for the cost table.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def _path(model_path: str | None, tiny: str | None) -> Any:
    if (model_path is None) == (tiny is None):
        raise ValueError("a scorer needs exactly one of model_path and tiny")
    if tiny is not None:
        from .tiny_guards import build_tiny_aux

        return build_tiny_aux(tiny)
    from .loading import resolve_model_path

    return resolve_model_path(model_path)


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class ClipScorer:
    """``score(texts, image)``: CLIP's ``logits_per_image / 100`` for each text, as ETA's code reads it (for
    OpenAI's CLIP models, whose logit scale is 100, the cosine similarity of the two embeddings)."""

    def __init__(self, model_path: str | None = None, tiny: str | None = None, device: str | None = None) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        path = _path(model_path, tiny)
        self.device = _device(device)
        self.model = CLIPModel.from_pretrained(path).to(self.device).eval()
        self.images = AutoImageProcessor.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.counts: Counter[str] = Counter()

    def score(self, texts: list[str], image_path: str) -> list[float]:
        import torch
        from PIL import Image

        with Image.open(image_path) as img:
            pixels = self.images(images=img.convert("RGB"), return_tensors="pt")["pixel_values"].to(self.device)
        max_len = self.model.config.text_config.max_position_embeddings
        text = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(pixel_values=pixels, **text.to(self.device))
        self.counts.update(calls=1, forwards=len(texts), prompt_tokens=int(text["attention_mask"].sum()))
        return [float(x) for x in out.logits_per_image[0] / 100]


class RewardScorer:
    """``score(prompt, response)``: a sequence-classification reward model's score of the exchange (ArmoRM's
    ``output.score``; a plain classifier's single logit)."""

    def __init__(
        self,
        model_path: str | None = None,
        tiny: str | None = None,
        device: str | None = None,
        torch_dtype: str = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .loading import resolve_dtype

        path = _path(model_path, tiny)
        self.device = _device(device)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path,
            dtype=resolve_dtype(torch_dtype, self.device),
            device_map=self.device,
            trust_remote_code=trust_remote_code,
        ).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.counts: Counter[str] = Counter()

    def score(self, prompt: str, response: str) -> float:
        import torch

        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        enc = self.tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_tensors="pt", truncation=True, max_length=4096
        )
        ids = enc["input_ids"].to(self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids)
        self.counts.update(calls=1, forwards=1, prompt_tokens=int(ids.shape[1]))
        score = getattr(out, "score", None)
        return float((score if score is not None else out.logits[0, 0]).float().reshape(-1)[0])
