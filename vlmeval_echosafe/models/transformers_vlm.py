"""The plugin's own local backend for image-text models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA, LLaVA-NeXT,
InternVL in Hugging Face format).

VLMEvalKit's `Qwen2VLChat` hard-codes flash-attention and asserts a GPU, so inner models that the plugin
runs itself go through this class instead: `AutoModelForImageTextToText` + `AutoProcessor` with sdpa
attention, on CPU or CUDA. It also runs the tiny random-weight models of `vlmeval_echosafe.models.tiny`, so
the whole pipeline can be tested on a CPU machine with no downloadable weights.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

from . import handoff
from .constrained import Constraint, FormProcessor, FormRows, Grammars
from .loading import missing_weights_error, resolve_dtype, resolve_model_path
from .sessions import Session, SessionDecoding
from .stopping import RowEnds
from .tiny import TINY_BUILDERS

logger = logging.getLogger(__name__)

Content = list[dict[str, str]]  # VLMEvalKit items: {'type': 'image'|'text', 'value': path_or_text}
FEATURE_HANDOFF = 64  # image features kept between a memory key and its answer (a micro-batch's worth and more)


def _file_key(path: str) -> tuple:
    """An image file's identity for the feature handoff: path, size and modification time."""
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


class TransformersVLM(SessionDecoding):
    """A local Hugging Face image-text model with greedy decoding: batched answers, KV-cache sessions and
    grammar-constrained follow-ups (the core's ``kv-session`` protocol)."""

    inner_protocol = "kv-session"

    def __init__(
        self,
        model_path: str | None = None,
        tiny: str | None = None,
        family: str | None = None,
        max_new_tokens: int = 256,
        min_new_tokens: int = 0,
        device: str | None = None,
        torch_dtype: str = "auto",
        attn_implementation: str = "sdpa",
        **kwargs: Any,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        if (model_path is None) == (tiny is None):
            raise ValueError("vlmeval-echosafe: TransformersVLM needs exactly one of model_path= or tiny=.")
        if kwargs:  # VLMEvalKit passes use_vllm= to Qwen2-VL-named models; this backend has no use for it.
            logger.debug("TransformersVLM ignores arguments %s", sorted(kwargs))
        if tiny is not None:
            if tiny not in TINY_BUILDERS:
                raise ValueError(f"vlmeval-echosafe: unknown tiny model {tiny!r}; known: {sorted(TINY_BUILDERS)}")
            self.model_path = TINY_BUILDERS[tiny]()
        else:
            self.model_path = resolve_model_path(model_path)
        self.name = tiny or model_path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_new_tokens = max_new_tokens
        # Answers (not follow-ups) are at least this long, end-of-turn suppressed until then: benchmarks use it to
        # time realistic answer lengths on random-weight models, which would otherwise stop at random.
        self.min_new_tokens = min_new_tokens

        try:
            found = AutoConfig.from_pretrained(self.model_path).model_type
            if family is not None and found != family:
                raise ValueError(
                    f"vlmeval-echosafe: {self.name!r} ({self.model_path}) is a {found!r} checkpoint, but its "
                    f"wrapper config says family: {family}; fix model_path or family in wrappers/models.yaml"
                )
            self.processor = AutoProcessor.from_pretrained(self.model_path)
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.model_path,
                dtype=resolve_dtype(torch_dtype, self.device),
                attn_implementation=attn_implementation,
                device_map=self.device,
            ).eval()
        except OSError as err:  # a cached snapshot with missing files, e.g. an interrupted download
            if model_path is not None and not Path(model_path).expanduser().is_dir():
                raise missing_weights_error(model_path, f"the cached snapshot is incomplete ({err})") from err
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
        self._criteria: dict[tuple, Any] = {}
        # What decoding cost over the object's life, read by the benches: new tokens of answers and of follow-up
        # turns, forward passes of the language model, the passes that decoded follow-ups only, and the prompt
        # tokens the answers were prefilled with.
        self.decoded: Counter[str] = Counter()
        self._features: OrderedDict[tuple, Any] = OrderedDict()  # image features handed from key to answer
        self._handoff = self.model._supports_mm_encoder_outputs()
        self._grammars: Grammars | None = None  # built on the first constrained call

    @property
    def tokens_generated(self) -> int:
        """New tokens decoded over the object's life."""
        return self.decoded["answer_tokens"] + self.decoded["follow_up_tokens"]

    def _eos_ids(self) -> list[int]:
        """End-of-turn ids: the generation config's (Qwen lists two) plus the tokenizer's eos."""
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        eos = self.processor.tokenizer.eos_token_id
        if eos is not None and eos not in ids:
            ids.append(eos)
        return ids

    def _render(self, turns: list[dict], add_generation_prompt: bool = True) -> tuple[str, list[Any], list[str]]:
        """One conversation as chat-template text plus its images and their paths, in order.

        Each turn is {"role": "user"|"assistant"|"system", "content": [VLMEvalKit items] or str}.
        """
        from PIL import Image

        chat: list[dict] = []
        images: list[Image.Image] = []
        paths: list[str] = []
        for turn in turns:
            items = turn["content"]
            if isinstance(items, str):
                items = [{"type": "text", "value": items}]
            content = []
            for item in items:
                if item["type"] == "image":
                    with Image.open(item["value"]) as img:
                        images.append(img.convert("RGB"))
                    paths.append(item["value"])
                    content.append({"type": "image"})
                elif item["type"] == "text":
                    content.append({"type": "text", "text": item["value"]})
                else:
                    raise ValueError(f"vlmeval-echosafe: TransformersVLM cannot take {item['type']!r} inputs")
            chat.append({"role": turn["role"], "content": content})
        text = self.processor.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, tokenize=False)
        return text, images, paths

    def prepare_inputs(self, turns: list[dict], add_generation_prompt: bool = True) -> Any:
        """Render one conversation and run the processor (tensors on device)."""
        return self.prepare_batch([turns], add_generation_prompt)

    def prepare_batch(
        self, conversations: list[list[dict]], add_generation_prompt: bool = True, reuse_features: bool = False
    ) -> Any:
        """Render several conversations into one left-padded batch (the padding is masked out).

        With ``reuse_features``, images whose features `image_features` computed are passed to the model as
        those features (``mm_encoder_outputs``) instead of pixels, and taken out of the handoff."""
        rendered = [self._render(turns, add_generation_prompt) for turns in conversations]
        images = [img for _, imgs, _ in rendered for img in imgs]
        inputs = self.processor(
            text=[text for text, _, _ in rendered],
            images=images or None,
            padding=len(rendered) > 1,
            padding_side="left",
            return_tensors="pt",
        ).to(self.model.device)
        paths = [p for _, _, ps in rendered for p in ps]
        keys = [_file_key(p) for p in paths]
        if reuse_features and keys and all(k in self._features for k in keys):
            inputs = dict(inputs)
            del inputs["pixel_values"]
            slices = [self._features[k] for k in keys]  # an image shown twice is kept until both are read
            for k in set(keys):
                del self._features[k]
            inputs["mm_encoder_outputs"] = {"image": handoff.join(slices)}
        return inputs

    def _image_inputs(self, images: list[Any]) -> tuple[Any, list[int] | None]:
        """The image processor's outputs for ``images``, as the processor's own call makes them (its
        image defaults, e.g. InternVL's tiling, applied), and each image's tile count where the model reads
        tiles as rows of one tensor."""
        defaults = getattr(self.processor, "images_kwargs", None) or {}
        batch = self.processor.image_processor(images=images, **{**defaults, "return_tensors": "pt"})
        tiles = batch.pop("num_patches", None)
        batch = batch.to(device=self.model.device, dtype=self.model.dtype)
        return batch, None if tiles is None else [int(n) for n in tiles]

    def image_features(self, paths: list[str]) -> list[Any]:
        """The image tokens the language model receives for each image (vision tower + projector), one (n, hidden)
        tensor per image, computed in one vision pass.

        What the answer's forward pass needs of them (for Qwen3-VL also the deepstack features) is also kept, for
        the next answer that shows the same file, which then skips the vision tower: EchoSafe's memory key and
        its answer encode each image once between them. Kept where the model's forward takes pre-computed
        features (``mm_encoder_outputs``; every family here), at most `FEATURE_HANDOFF` images, oldest dropped
        first."""
        import torch
        from PIL import Image

        images = []
        for path in paths:
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        # The image processor's outputs are what get_image_features takes, for every supported family:
        # pixel_values (+ image_grid_thw for the Qwen families, + image_sizes for LLaVA-NeXT).
        batch, tiles = self._image_inputs(images)
        with torch.inference_mode():
            slices = handoff.split(self.model.get_image_features(**batch), tiles)
        if len(slices) != len(paths):
            raise RuntimeError(f"vlmeval-echosafe: {len(slices)} image features for {len(paths)} images")
        if self._handoff:
            for path, piece in zip(paths, slices, strict=True):
                self._features[_file_key(path)] = piece
            while len(self._features) > FEATURE_HANDOFF:
                self._features.pop(next(iter(self._features)))
        return [piece.tokens for piece in slices]

    def generation_kwargs(self, max_new_tokens: int | None = None, answer: bool = True) -> dict[str, Any]:
        """Greedy decoding settings shared by every call and by defenses calling `model.generate` directly;
        ``answer``: the call answers a request (``min_new_tokens`` applies), not a follow-up turn."""
        kwargs = {
            "do_sample": False,
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "suppress_tokens": self.suppress_token_ids or None,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
        }
        if answer and self.min_new_tokens:
            kwargs["min_new_tokens"] = min(self.min_new_tokens, kwargs["max_new_tokens"])
        return kwargs

    def generate_turns(self, turns: list[dict], max_new_tokens: int | None = None) -> str:
        """Answer the last user turn of a multi-turn conversation (the entry point for defenses)."""
        import torch

        inputs = self.prepare_batch([turns], reuse_features=True)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.generation_kwargs(max_new_tokens))
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        self.decoded.update(
            answer_tokens=new_tokens.shape[0],
            forwards=new_tokens.shape[0],
            answer_prompt_tokens=int(inputs["attention_mask"].sum()),
        )
        return self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    # Sessions: conversations whose token ids and KV cache persist, so a follow-up turn (EchoSafe's reflection)
    # prefills only its own new tokens instead of the image, question and answer again. A session holds one or
    # more rows decoded together; a one-row session is the sequential case and goes through the same code.
    # Facts this relies on (checked in tests/test_sessions.py against a full re-prefill of the same ids, and
    # row by row against one-row sessions): the next call's ids are the previous `sequences` + the new tokens
    # (re-rendering the answer text is not lossless); pixel values are not passed again; positions are counted
    # over the attention mask, so padding anywhere in a row changes nothing (transformers >= 5 derives them
    # from the mask, plus Qwen2-VL's rope deltas, which live on the model and are saved and restored per
    # session); `generate` extends the cache it is given.

    def start(self, turns: list[dict], max_new_tokens: int | None = None) -> tuple[str, Session]:
        """`generate_turns`, keeping what a follow-up turn needs to continue without a second prefill."""
        texts, session = self.start_batch([turns], max_new_tokens)
        return texts[0], session

    def start_batch(
        self, conversations: list[list[dict]], max_new_tokens: int | None = None
    ) -> tuple[list[str], Session]:
        """Answer several conversations in one left-padded batch, each row stopping on its own."""
        inputs = self.prepare_batch(conversations, reuse_features=True)
        self._set_rope_state(None)
        replies, session_ids, session_mask, cache = self._decode(inputs, None, max_new_tokens, None, answer=True)
        session = Session(
            turns=[list(t) for t in conversations],
            replies=replies,
            ids=session_ids,
            mask=session_mask,
            cache=cache,
            rope_deltas=self._rope_state(),
        )
        return [r.strip() for r in replies], session

    def generate_batch_turns(self, conversations: list[list[dict]], max_new_tokens: int | None = None) -> list[str]:
        """Answers to several conversations, decoded together (nothing is kept for a follow-up)."""
        return self.start_batch(conversations, max_new_tokens)[0]

    def _decode(
        self,
        inputs: dict,
        cache: Any,
        max_new_tokens: int | None,
        stop: str | None,
        answer: bool,
        form: FormRows | None = None,
    ) -> tuple[list[str], Any, Any, Any]:
        """Greedy `generate` on a batch; returns each row's new text, the full ids and mask (a row's tokens after
        its own end are padding) and the cache. With ``form``, every row follows it (`FormProcessor`)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        ends = RowEnds(ids.shape[1], self.eos_token_ids, self._stop_criteria(stop))
        processors = [FormProcessor(form, list(range(ids.shape[0])), ended=ends.is_ended)] if form else []
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                cache=cache,
                return_dict_in_generate=True,
                stopping_criteria=StoppingCriteriaList([ends]),
                logits_processor=LogitsProcessorList(processors),
                **self.generation_kwargs(max_new_tokens, answer=answer),
            )
        new = out.sequences[:, ids.shape[1] :]
        lengths = ends.lengths(new.shape[0], new.shape[1])
        self.decoded.update({"answer_tokens" if answer else "follow_up_tokens": int(lengths.sum())})
        if answer:
            self.decoded.update(answer_prompt_tokens=int(mask.sum()))
        self.decoded.update(forwards=new.shape[1], follow_up_forwards=0 if answer else new.shape[1])
        new_mask = (torch.arange(new.shape[1], device=new.device)[None, :] < lengths[:, None].to(new.device)).to(
            mask.dtype
        )
        tok = self.processor.tokenizer
        replies = [tok.decode(new[i, : int(n)], skip_special_tokens=True) for i, n in enumerate(lengths)]
        return replies, out.sequences, torch.cat([mask, new_mask], dim=1), out.cache

    def form_rows(self, constraint: Constraint, rows: int) -> FormRows:
        """Fresh grammar state for ``rows`` replies under ``constraint`` (the tokenizer's grammars built once)."""
        if self._grammars is None:
            vocab = self.model.get_output_embeddings().weight.shape[0]  # logits width, may exceed the tokenizer's
            self._grammars = Grammars(self.processor.tokenizer, vocab, self.eos_token_ids)
        return self._grammars.rows(constraint, rows)

    def _logits_processors(self, ids: Any, max_new_tokens: int) -> Any:
        """The logits processors `generate` applies to a follow-up turn: the checkpoint's generation config (e.g. a
        repetition penalty) and this backend's settings (suppressed tokens)."""
        from transformers import LogitsProcessorList

        config, _ = self.model._prepare_generation_config(None, **self.generation_kwargs(max_new_tokens, answer=False))
        return self.model._get_logits_processor(
            generation_config=config,
            input_ids_seq_length=ids.shape[1],
            encoder_input_ids=ids,
            logits_processor=LogitsProcessorList(),
            device=ids.device,
            model_kwargs={},
        )

    def _stop_criteria(self, stop: str | None) -> Any:
        if not stop:
            return None
        from transformers import StopStringCriteria

        key = ("stop", stop)
        if key not in self._criteria:  # building it scans the vocabulary; once per stop string
            self._criteria[key] = StopStringCriteria(self.processor.tokenizer, [stop])
        return self._criteria[key]

    def _rope_state(self) -> Any:
        return getattr(getattr(self.model, "model", None), "rope_deltas", None)

    def _set_rope_state(self, value: Any) -> None:
        inner = getattr(self.model, "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = value
