"""The tiny model of each family the backend runs: Qwen2-VL / 2.5-VL / 3-VL, LLaVA (two tokenizers), LLaVA-NeXT,
InternVL, each the real Hugging Face architecture with its stock processor (see :mod:`.tiny`)."""

from __future__ import annotations

from pathlib import Path

from .tiny_build import _CORPUS, _QWEN_FAMILIES, _SEED, _SMALL_TEXT, _finish, _seeded_model, _train_bpe

_QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen_tokenizer(extra: dict[str, str] | None = None):
    """The Qwen-family tokenizer: byte-level BPE with Qwen's special tokens (plus ``extra`` named ones, e.g.
    InternVL's image markers) and Qwen's chat template."""
    from transformers import PreTrainedTokenizerFast

    names = dict(extra or {})
    specials = _QWEN_SPECIALS + [t for t in names.values() if t not in _QWEN_SPECIALS]
    return PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(specials, vocab_size=768),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=names or specials[1:],
        chat_template=_QWEN_CHAT_TEMPLATE,
        model_max_length=4096,
    )


def _write_tiny_qwen(out: Path, family: str) -> None:
    import transformers

    spec = _QWEN_FAMILIES[family]
    tok = _qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    unit = spec["patch"] * 2  # pixels per side of one image token (patch x merge 2)
    pixels = {"min_pixels": unit * unit * 4, "max_pixels": unit * unit * 36}  # 4 to 36 image tokens per image
    size = {"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]}
    processor = getattr(transformers, spec["processor"])(
        image_processor=transformers.Qwen2VLImageProcessor(size=size, patch_size=spec["patch"]),
        video_processor=getattr(transformers, spec["video"])(size=size, patch_size=spec["patch"]),
        tokenizer=tok,
        chat_template=_QWEN_CHAT_TEMPLATE,
    )
    text = {
        **_SMALL_TEXT,
        "vocab_size": len(tok),
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        **spec["text"],
    }
    vision = {
        "depth": 2,
        "patch_size": spec["patch"],
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": 0.15,
        **spec["vision"],
    }
    config = getattr(transformers, spec["config"])(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        initializer_range=0.15,
    )
    model = _seeded_model(getattr(transformers, spec["model"]), config, spec.get("seed", _SEED))
    _finish(model, tok, out, processor, eos=["<|im_end|>", "<|endoftext|>"], pad="<|endoftext|>", bos="<|endoftext|>")


# A LLaVA-1.5-style template; the assistant turn ends with </s> so multi-turn prompts are well formed.
_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% else %}{{ ' ' }}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]


def _llava_bpe_tokenizer():
    """LLaVA's tokens on a byte-level BPE (not what real LLaVA ships: see `_llama_sp_tokenizer`)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    bpe = _train_bpe(_LLAVA_SPECIALS, vocab_size=768)
    bos_id = bpe.token_to_id("<s>")
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens=["<image>"],
        chat_template=_LLAVA_CHAT_TEMPLATE,
        model_max_length=4096,
    )


def _llama_sp_tokenizer():
    """A Llama-style SentencePiece BPE, as LLaVA-1.5 / LLaVA-NeXT (Vicuna) ship: `<unk>` `<s>` `</s>` at ids 0-2,
    the 256 byte-fallback pieces `<0x00>`..`<0xFF>` at 3-258 (unknown characters become their UTF-8 bytes),
    then pieces that carry the word boundary as a leading `▁`; `<image>` and `<pad>` are added tokens after the
    vocabulary, as in the llava-hf repositories. Merges are trained on the fixed corpus, so " safe" is one piece
    and " unsafe" several, as with real Llama vocabularies."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    specials = ["<unk>", "<s>", "</s>"]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    trainer_tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    return LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        pad_token="<pad>",
        extra_special_tokens=["<image>"],
        chat_template=_LLAVA_CHAT_TEMPLATE,
        model_max_length=4096,
    )


def _clip_and_llama(tok, image_size: int, patch: int) -> dict:
    """Vision tower (CLIP) and language model (Llama) configs shared by the LLaVA builds."""
    from transformers import CLIPVisionConfig, LlamaConfig

    return {
        "vision_config": CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
            projection_dim=32,
            initializer_range=0.15,
        ),
        "text_config": LlamaConfig(
            **_SMALL_TEXT,
            vocab_size=len(tok),
            bos_token_id=tok.convert_tokens_to_ids("<s>"),
            eos_token_id=tok.convert_tokens_to_ids("</s>"),
            pad_token_id=tok.convert_tokens_to_ids("<pad>"),
        ),
        "image_token_index": tok.convert_tokens_to_ids("<image>"),
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "initializer_range": 0.15,
    }


def _write_tiny_llava(out: Path, tokenizer: str = "bpe") -> None:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _llama_sp_tokenizer() if tokenizer == "sp" else _llava_bpe_tokenizer()
    image_size, patch = 84, 14  # 6x6 = 36 image tokens (the CLS token is dropped by the "default" strategy)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_CHAT_TEMPLATE,
    )
    config = LlavaConfig(**_clip_and_llama(tok, image_size, patch), image_seq_length=(image_size // patch) ** 2)
    model = _seeded_model(LlavaForConditionalGeneration, config)
    _finish(model, tok, out, processor, eos=["</s>"], pad="<pad>", bos="<s>")


def _write_tiny_llava_next(out: Path) -> None:
    """LLaVA-NeXT's any-resolution path at toy scale: each image is resized onto the best-fitting grid of 42-pixel
    tiles (1x2, 2x1, 2x2, 1x3 or 3x1), every tile and a 42-pixel overview are encoded (3x3 tokens each), the tile
    features are un-padded to the image's aspect ratio and end each row with a learned newline token. So two
    images of different size or aspect ratio give different numbers of image tokens."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = _llama_sp_tokenizer()
    tile, patch = 42, 14
    pinpoints = [[tile, 2 * tile], [2 * tile, tile], [2 * tile, 2 * tile], [tile, 3 * tile], [3 * tile, tile]]
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": tile},
            crop_size={"height": tile, "width": tile},
            image_grid_pinpoints=pinpoints,
        ),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_CHAT_TEMPLATE,
    )
    config = LlavaNextConfig(
        **_clip_and_llama(tok, tile, patch), image_grid_pinpoints=pinpoints, image_seq_length=(tile // patch) ** 2
    )
    model = _seeded_model(LlavaNextForConditionalGeneration, config)
    _finish(model, tok, out, processor, eos=["</s>"], pad="<pad>", bos="<s>")


# InternVL (HF format): Qwen chat tokens plus InternVL's image markers; an image is <img>, one <IMG_CONTEXT>
# per image token, </img>. The template writes one <IMG_CONTEXT> per image, which the processor expands.
_INTERNVL_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
_INTERNVL_CHAT_TEMPLATE = _QWEN_CHAT_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n")


def _write_tiny_internvl(out: Path) -> None:
    """InternVL3.5 at toy scale: an InternViT tower on 56-pixel tiles (4x4 patches, pixel-shuffled to 2x2 = 4
    tokens per tile), dynamic tiling (1 to 4 tiles by aspect ratio, plus an overview tile when there are
    several) and a Qwen3 language model."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    tok = _qwen_tokenizer(_INTERNVL_TOKENS)
    tok.chat_template = _INTERNVL_CHAT_TEMPLATE
    tile, patch = 56, 14
    tokens_per_tile = (tile // patch // 2) ** 2
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=1, max_patches=4
        ),
        video_processor=InternVLVideoProcessor(size={"height": tile, "width": tile}),
        tokenizer=tok,
        image_seq_length=tokens_per_tile,
        chat_template=_INTERNVL_CHAT_TEMPLATE,
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    config = InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": [tile, tile],
            "patch_size": [patch, patch],
            "use_mean_pooling": False,
            "initializer_range": 0.15,
        },
        text_config={
            **_SMALL_TEXT,
            "model_type": "qwen3",
            "vocab_size": len(tok),
            "head_dim": 16,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_tile,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        initializer_range=0.15,
    )
    model = _seeded_model(InternVLForConditionalGeneration, config)
    _finish(model, tok, out, processor, eos=["<|im_end|>", "<|endoftext|>"], pad="<|endoftext|>", bos="<|endoftext|>")
