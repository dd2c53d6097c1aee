"""The plugin's own local backend for image-text models (Qwen2-VL, Qwen2.5-VL, LLaVA, LLaVA-NeXT).

VLMEvalKit's `Qwen2VLChat` hard-codes flash-attention and asserts a GPU, so inner models that the plugin
runs itself go through this class instead: `AutoModelForImageTextToText` + `AutoProcessor` with sdpa
attention, on CPU or CUDA. It also runs the tiny random-weight models of `vlmeval_echosafe.models.tiny`, so
the whole pipeline can be tested on a CPU machine with no downloadable weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmeval.vlm.base import BaseModel

from .tiny import TINY_BUILDERS

logger = logging.getLogger(__name__)

Content = list[dict[str, str]]  # VLMEvalKit items: {'type': 'image'|'text', 'value': path_or_text}


@dataclass
class Session:
    """A conversation kept open on the backend: its turns, last reply, token ids, KV cache and rope state."""

    turns: list[dict]
    reply: str
    ids: Any  # (1, L) token ids so far
    cache: Any  # KV cache of all but the last id
    rope_deltas: Any = None


def _missing_weights_error(repo_id: str, detail: str) -> FileNotFoundError:
    from huggingface_hub import constants

    return FileNotFoundError(
        f"vlmeval-echosafe: the weights of {repo_id!r} were not found in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); {detail}. This backend never downloads. Fix: run "
        f"`huggingface-cli download {repo_id}` on a machine with access (and copy that cache here, or "
        f"set HF_HOME / HF_HUB_CACHE to it), or pass model_path=/local/folder in the wrapper config."
    )


def resolve_model_path(model_path: str) -> Path:
    """Turn a local folder or a Hugging Face repo id into a local folder, using the local HF cache only."""
    local = Path(model_path).expanduser()
    if local.is_dir():
        return local
    looks_like_path = model_path.startswith((".", "/", "~")) or model_path.count("/") > 1
    if looks_like_path or (os.sep != "/" and os.sep in model_path):
        raise FileNotFoundError(f"vlmeval-echosafe: model folder {str(local)!r} does not exist.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_path, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError) as err:
        raise _missing_weights_error(model_path, "it is neither a local folder nor a cached repo") from err


def _torch_dtype(name: str, device: str) -> Any:
    """`auto` means float32 on CPU (bf16 matmuls are slow there) and the checkpoint's dtype on CUDA."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(
            f"vlmeval-echosafe: unknown torch_dtype {name!r} (use auto, float32, bfloat16, float16)"
        )
    return dtype


class TransformersVLM(BaseModel):
    """A local Hugging Face image-text model with greedy decoding, usable as a VLMEvalKit model."""

    INTERLEAVE = False
    is_api = False

    def __init__(
        self,
        model_path: str | None = None,
        tiny: str | None = None,
        max_new_tokens: int = 256,
        device: str | None = None,
        torch_dtype: str = "auto",
        attn_implementation: str = "sdpa",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if (model_path is None) == (tiny is None):
            raise ValueError("vlmeval-echosafe: TransformersVLM needs exactly one of model_path= or tiny=.")
        if kwargs:  # VLMEvalKit passes use_vllm= to Qwen2-VL-named models; this backend has no use for it.
            logger.debug("TransformersVLM ignores arguments %s", sorted(kwargs))
        if tiny is not None:
            if tiny not in TINY_BUILDERS:
                raise ValueError(
                    f"vlmeval-echosafe: unknown tiny model {tiny!r}; known: {sorted(TINY_BUILDERS)}"
                )
            self.model_path = TINY_BUILDERS[tiny]()
        else:
            self.model_path = resolve_model_path(model_path)
        self.name = tiny or model_path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_new_tokens = max_new_tokens

        try:
            self.processor = AutoProcessor.from_pretrained(self.model_path)
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.model_path,
                dtype=_torch_dtype(torch_dtype, self.device),
                attn_implementation=attn_implementation,
                device_map=self.device,
            ).eval()
        except OSError as err:  # a cached snapshot with missing files, e.g. an interrupted download
            if model_path is not None and not Path(model_path).expanduser().is_dir():
                raise _missing_weights_error(
                    model_path, f"the cached snapshot is incomplete ({err})"
                ) from err
            raise

        tokenizer = self.processor.tokenizer
        self.eos_token_ids = self._eos_ids()
        # Random (tiny) weights happily emit <|image_pad|> and friends, which breaks decoding and the next
        # turn; real models never need them in an answer either. Everything special but end-of-turn is
        # suppressed, on top of the checkpoint's own suppress list (tiny models list unprintable ones there).
        specials = {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
        specials |= set(self.model.generation_config.suppress_tokens or ())
        self.suppress_token_ids = sorted(specials - set(self.eos_token_ids))
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]

    def _eos_ids(self) -> list[int]:
        """End-of-turn ids: the generation config's (Qwen lists two) plus the tokenizer's eos."""
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        eos = self.processor.tokenizer.eos_token_id
        if eos is not None and eos not in ids:
            ids.append(eos)
        return ids

    def prepare_inputs(self, turns: list[dict], add_generation_prompt: bool = True) -> Any:
        """Render a conversation with the model's chat template and run the processor (tensors on device).

        Each turn is {"role": "user"|"assistant"|"system", "content": [VLMEvalKit items] or str}.
        """
        from PIL import Image

        chat: list[dict] = []
        images: list[Image.Image] = []
        for turn in turns:
            items = turn["content"]
            if isinstance(items, str):
                items = [{"type": "text", "value": items}]
            content = []
            for item in items:
                if item["type"] == "image":
                    with Image.open(item["value"]) as img:
                        images.append(img.convert("RGB"))
                    content.append({"type": "image"})
                elif item["type"] == "text":
                    content.append({"type": "text", "text": item["value"]})
                else:
                    raise ValueError(f"vlmeval-echosafe: TransformersVLM cannot take {item['type']!r} inputs")
            chat.append({"role": turn["role"], "content": content})
        text = self.processor.apply_chat_template(
            chat, add_generation_prompt=add_generation_prompt, tokenize=False
        )
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt")
        return inputs.to(self.model.device)

    def generation_kwargs(self, max_new_tokens: int | None = None) -> dict[str, Any]:
        """Greedy decoding settings shared by every call and by defenses calling `model.generate` directly."""
        return {
            "do_sample": False,
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "suppress_tokens": self.suppress_token_ids or None,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
        }

    def generate_turns(self, turns: list[dict], max_new_tokens: int | None = None) -> str:
        """Answer the last user turn of a multi-turn conversation (the entry point for defenses)."""
        import torch

        inputs = self.prepare_inputs(turns)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.generation_kwargs(max_new_tokens))
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        return self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    # Guided generation: EchoSafe's self-reflection fills a fixed form field by field ("Scenario: …",
    # "Decision: safe|unsafe") instead of hoping for valid JSON, which random-weight models never emit and
    # real 7B models sometimes don't. Both methods prefill the assistant turn with `prefix`.

    def _prefilled(self, turns: list[dict], text: str) -> Any:
        """`prepare_inputs(turns)` with the tokens of `text` appended as the start of the assistant reply.

        The text is tokenized on its own (no special tokens) and appended at the token level, so the model is
        fed exactly those ids; per-token side tensors grow with it (attention 1, token types 0 = text).
        """
        import torch

        inputs = self.prepare_inputs(turns)
        ids = self.processor.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        ids = ids.to(inputs["input_ids"].device)
        length = inputs["input_ids"].shape[1]
        for key, value in list(inputs.items()):
            if key == "input_ids":
                inputs[key] = torch.cat([value, ids], dim=1)
            elif isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (1, length):
                fill = torch.ones_like(ids) if key == "attention_mask" else torch.zeros_like(ids)
                inputs[key] = torch.cat([value, fill.to(value.dtype)], dim=1)
        return inputs

    def complete(
        self, turns: list[dict], prefix: str, max_new_tokens: int = 48, stop: str | None = "\n"
    ) -> str:
        """Greedily continue an assistant reply that starts with `prefix`; return only the new text.

        The text is cut at the first `stop` (None: no cut) and stripped; generation also halts there. End
        `prefix` without a trailing space: byte-level BPE attaches a space to the next word, so a lone space
        token is a context the model never produced itself.
        """
        import torch

        inputs = self._prefilled(turns, prefix)
        kwargs = self.generation_kwargs(max_new_tokens)
        if stop:
            kwargs.update(stop_strings=[stop], tokenizer=self.processor.tokenizer)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        text = self.processor.tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        if stop:
            text = text.split(stop, 1)[0]
        return text.strip()

    def option_logprobs(self, turns: list[dict], prefix: str, options: list[str]) -> list[float]:
        """Total log-likelihood of each option as the continuation of the prefilled `prefix`.

        Each option is tokenized together with the prefix and scored from the first token where the options'
        tokenizations differ, so all options are compared in the same context even when a BPE merge crosses
        the prefix/option boundary (tokens shared by all options add the same amount to every total and are
        left out). Totals are not length-normalised. One forward pass per option.
        """
        import torch

        tokenized = [
            self.processor.tokenizer(prefix + o, add_special_tokens=False).input_ids for o in options
        ]
        shared = 0
        while all(len(ids) > shared for ids in tokenized) and len({ids[shared] for ids in tokenized}) == 1:
            shared += 1
        scores = []
        for option, own in zip(options, tokenized, strict=True):
            n_scored = len(own) - shared
            if n_scored == 0:  # all its tokens are shared: an empty continuation, probability 1
                scores.append(0.0)
                continue
            inputs = self._prefilled(turns, prefix + option)
            with torch.inference_mode():
                logits = self.model(**inputs, logits_to_keep=n_scored + 1).logits[0, :-1].float()
            targets = inputs["input_ids"][0, -n_scored:, None]
            scores.append(logits.log_softmax(-1).gather(1, targets).sum().item())
        return scores

    def choose(self, turns: list[dict], prefix: str, options: list[str]) -> str:
        """The option most likely to follow the prefilled `prefix` (e.g. safe / unsafe); ties: the first."""
        if not options:
            raise ValueError("vlmeval-echosafe: choose() needs at least one option")
        scores = self.option_logprobs(turns, prefix, options)
        return options[max(range(len(options)), key=lambda i: (scores[i], -i))]

    # Sessions: a conversation whose token ids and KV cache persist, so a follow-up turn (EchoSafe's
    # reflection) prefills only its own new tokens instead of the image, question and answer again.
    # Facts this relies on (checked in tests/test_sessions.py against a full re-prefill of the same ids):
    # the next call's ids are the previous `sequences` + the new tokens (re-rendering the answer text is not
    # lossless); pixel values are not passed again; Qwen2-VL's rope state lives on the model and is saved and
    # restored per session; `generate` extends the cache it is given.

    def start(self, turns: list[dict], max_new_tokens: int | None = None) -> tuple[str, Session]:
        """`generate_turns`, keeping what a follow-up turn needs to continue without a second prefill."""
        import torch

        inputs = self.prepare_inputs(turns)
        kwargs = self.generation_kwargs(max_new_tokens)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs, return_dict_in_generate=True)
        start = inputs["input_ids"].shape[1]
        text = self.processor.tokenizer.decode(out.sequences[0, start:], skip_special_tokens=True).strip()
        return text, Session(turns=list(turns), reply=text, ids=out.sequences, cache=out.past_key_values,
                             rope_deltas=self._rope_state())

    def _rope_state(self) -> Any:
        return getattr(getattr(self.model, "model", None), "rope_deltas", None)

    def _set_rope_state(self, value: Any) -> None:
        inner = getattr(self.model, "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = value

    def next_turn_text(self, session: Session, user_text: str) -> str:
        """The chat-template text between the session's last reply and the generation prompt of a new user turn
        (e.g. ``<|im_end|>\n<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n``)."""
        marker = "\x00REPLY\x00"
        turns = [*session.turns, {"role": "assistant", "content": marker}, {"role": "user", "content": user_text}]
        chat = [{"role": t["role"], "content": [{"type": "text", "text": t["content"]}] if isinstance(t["content"], str)
                 else [{"type": "image"} if i["type"] == "image" else {"type": "text", "text": i["value"]}
                       for i in t["content"]]} for t in turns]
        text = self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return text.split(marker, 1)[1]

    def _append(self, session: Session, text: str) -> Any:
        """Session ids + the tokens of ``text``, not repeating an end-of-turn token the reply already ended with."""
        import torch

        new = self.processor.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        new = new.to(session.ids.device)
        if new.shape[1] and int(session.ids[0, -1]) in self.eos_token_ids and int(new[0, 0]) == int(session.ids[0, -1]):
            new = new[:, 1:]
        return torch.cat([session.ids, new], dim=1)

    def extend(self, session: Session, text: str, max_new_tokens: int = 48, stop: str | None = "\n") -> str:
        """Append ``text`` (raw template text and/or an assistant prefix) and greedily continue from the cache.

        Returns the new text, cut at ``stop``; the session then holds everything generated."""
        import torch

        ids = self._append(session, text)
        kwargs = self.generation_kwargs(max_new_tokens)
        if stop:
            kwargs.update(stop_strings=[stop], tokenizer=self.processor.tokenizer)
        self._set_rope_state(session.rope_deltas)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=session.cache,
                                      return_dict_in_generate=True, **kwargs)
        reply = self.processor.tokenizer.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True)
        session.ids, session.cache = out.sequences, out.past_key_values
        return (reply.split(stop, 1)[0] if stop else reply).strip()

    def choose_next(self, session: Session, text: str, options: list[str]) -> str:
        """The option most likely to follow ``text`` in the session (ties: the first); the cache is cropped back,
        so the choice leaves the session unchanged (the caller appends the chosen text with its next extend)."""
        import torch

        if not options:
            raise ValueError("vlmeval-echosafe: choose_next() needs at least one option")
        cached = session.cache.get_seq_length()
        base = self._append(session, text)
        scores = []
        self._set_rope_state(session.rope_deltas)
        for option in options:
            opt = self.processor.tokenizer(option, add_special_tokens=False, return_tensors="pt").input_ids
            ids = torch.cat([base, opt.to(base.device)], dim=1)
            with torch.inference_mode():
                # No attention mask (nothing is padded): with one, Qwen2-VL derives positions from the mask's
                # full length instead of the uncached part.
                logits = self.model(input_ids=ids[:, cached:], past_key_values=session.cache,
                                    use_cache=True).logits[0].float()
            session.cache.crop(cached - session.cache.get_seq_length())  # negative: drop the scored tokens
            n = opt.shape[1]
            logp = logits[-n - 1:-1].log_softmax(-1).gather(1, ids[0, -n:, None]).sum().item()
            scores.append(logp)
        return options[max(range(len(options)), key=lambda i: (scores[i], -i))]

    def generate_inner(self, message: Content, dataset: str | None = None) -> str:
        return self.generate_turns([{"role": "user", "content": message}])

    def chat_inner(self, message: list[dict], dataset: str | None = None) -> str:
        """VLMEvalKit's multi-turn mode: its messages already have the shape `generate_turns` takes."""
        return self.generate_turns(message)
