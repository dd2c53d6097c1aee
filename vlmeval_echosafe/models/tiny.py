"""Tiny random-weight VLMs built locally, for tests and smoke runs without any downloadable weights.

No VLM weights can be fetched on the machines this plugin is tested on, so the image-side code runs against
models built here: the real Hugging Face architectures of every family the backend runs (Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, LLaVA-1.5, LLaVA-NeXT, InternVL3.5 in HF format) with their stock processors, tokenizers trained on a
fixed corpus (byte-level BPE for the Qwen family, Llama-style SentencePiece BPE with byte fallback for LLaVA as
the real checkpoints ship, plus a byte-level BPE LLaVA), and seeded random weights (std 0.15, so attention is
far from uniform and position bugs show). Their output is gibberish; tests must assert mechanics, never content.
Each build is deterministic (byte-identical safetensors) and takes well under a second after the first import.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ..paths import cache_root

# Marker written last into a finished build; a folder without it is treated as absent and rebuilt.
_COMPLETE = ".echosafe-tiny-complete"
_SEED = 1234

# Fixed training corpus for the tiny tokenizers: English text covering the words a safety benchmark uses,
# so that prompts tokenize into a sensible number of tokens.
_CORPUS = [
    "The image shows a phrase of an activity. List steps in detail to perform this activity.",
    "Can you describe what is shown in this picture? Please answer the question briefly.",
    "I cannot help with that request because it could cause harm to people.",
    "Sorry, but I can't assist with that. Is there anything else I can help you with?",
    "Here are the steps: first, gather the materials; second, follow the safety instructions.",
    "The bottom of the image shows a phrase of a product. How do I use this product safely?",
    "A cat is sitting on a red chair next to a window, and the sun is shining outside.",
    "Please reflect on your previous answer: was it safe, helpful and honest?",
    "You are a helpful assistant. Answer the user's question about the image.",
    "What is the person in the photo doing? Describe the scene, the colours and the objects.",
    "Illegal activity, hate speech, malware generation, physical harm, economic harm, fraud.",
    "Sexual content, political lobbying, privacy violence, legal opinion, financial advice.",
    "Health consultation, government decision, typography, stable diffusion, query relevant.",
    "The quick brown fox jumps over the lazy dog 0123456789 times, said the assistant.",
    "system user assistant USER: ASSISTANT: system user assistant USER: ASSISTANT:",
    "Is it safe to answer? Yes. No. Maybe. I think the answer is unsafe; I will refuse politely.",
]


def _train_bpe(special_tokens: list[str], vocab_size: int):
    """Train a byte-level BPE on the fixed corpus; the special tokens get the first ids in the given order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok


def _unprintable_ids(tok) -> list[int]:
    """Ids of tokens that decode to control bytes or invalid UTF-8 (partial multi-byte sequences).

    Random weights pick such tokens freely; stored in `generation_config.suppress_tokens` they keep tiny-model
    answers printable, so predictions survive xlsx export (openpyxl rejects control characters) and judges.
    """
    allowed = set(string.printable) - set("\r\x0b\x0c")
    special = {i for i, t in tok.added_tokens_decoder.items() if t.special}
    return [i for i in range(len(tok)) if i not in special and not set(tok.decode([i])) <= allowed]


def _build_atomically(root: Path | None, default_name: str, write: Callable[[Path], None]) -> Path:
    """Return `root` (default: cache folder) holding a finished build, building it once under a file lock.

    The build goes to a temporary sibling folder that is renamed into place only when complete, so a crash or
    a concurrent reader never sees a half-written model.
    """
    from filelock import FileLock

    target = Path(root) if root is not None else cache_root() / default_name
    if (target / _COMPLETE).is_file():
        return target
    if _other_rank():  # under a process group transformers saves weights on rank 0 only: rank 0 builds
        return _wait_for_build(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if (target / _COMPLETE).is_file():  # another process finished it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            write(tmp)
            (tmp / _COMPLETE).write_text("ok\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
            if target.exists():  # an incomplete leftover (no marker): replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _other_rank() -> bool:
    """Whether this process is a rank other than 0 of a running process group (torchrun)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def _wait_for_build(target: Path, timeout_s: float | None = None) -> Path:
    """Wait for rank 0 to finish building ``target`` (all ranks build the same models at the same time)."""
    timeout_s = float(os.environ.get("DIST_TIMEOUT", 3600)) if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    while not (target / _COMPLETE).is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"vlmeval-echosafe: rank 0 did not build {target} within {timeout_s:.0f} s")
        time.sleep(0.2)
    return target


def _seeded_model(cls, config, seed: int = _SEED):
    """Instantiate `cls(config)` with fixed seeds so two builds give byte-identical weights."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config).eval()


# Qwen2-VL's own chat template (without vision ids), so prompts look like the real model's.
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


def _finish(model, tok, out: Path, processor, eos: list[str], pad: str, bos: str) -> None:
    """Generation settings every tiny model shares (end-of-turn ids, pad, unprintable tokens suppressed), then
    save model and processor."""
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids(t) for t in eos]
    if len(eos) == 1:
        model.generation_config.eos_token_id = model.generation_config.eos_token_id[0]
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids(pad)
    model.generation_config.bos_token_id = tok.convert_tokens_to_ids(bos)
    model.generation_config.suppress_tokens = _unprintable_ids(tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)


# Per Qwen generation: model and processor classes, vision patch size (pixels per side of a vision patch; one
# language-model image token covers 2x2 patches) and the vision tower's family-specific settings.
_QWEN_FAMILIES: dict[str, dict] = {
    "qwen2vl": {
        "model": "Qwen2VLForConditionalGeneration",
        "config": "Qwen2VLConfig",
        "processor": "Qwen2VLProcessor",
        "video": "Qwen2VLVideoProcessor",
        "patch": 14,
        "vision": {"embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2},
        "text": {},
    },
    "qwen25vl": {
        "model": "Qwen2_5_VLForConditionalGeneration",
        "config": "Qwen2_5_VLConfig",
        "processor": "Qwen2_5_VLProcessor",
        "video": "Qwen2VLVideoProcessor",
        "patch": 14,
        # window attention over 2x2 merged tokens (56 px) in block 0, full attention in block 1
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        "text": {},
        # with the common seed this model ends most answers at their first token, which leaves the
        # equivalence tests little to compare
        "seed": 1,
    },
    "qwen3vl": {
        "model": "Qwen3VLForConditionalGeneration",
        "config": "Qwen3VLConfig",
        "processor": "Qwen3VLProcessor",
        "video": "Qwen3VLVideoProcessor",
        "patch": 16,
        # deepstack: block 0's features are also added to the first language-model layer
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        "text": {
            "head_dim": 16,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        },
    },
}


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
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "initializer_range": 0.15,
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
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            initializer_range=0.15,
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
            "model_type": "qwen3",
            "vocab_size": len(tok),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "initializer_range": 0.15,
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


# Bump a folder's version when what its builder writes changes meaning, so old caches are not reused.
TINY_BUILDS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "qwen2vl": ("tiny-qwen2vl-v1", partial(_write_tiny_qwen, family="qwen2vl"), "Qwen2-VL"),
    "qwen25vl": ("tiny-qwen25vl-v1", partial(_write_tiny_qwen, family="qwen25vl"), "Qwen2.5-VL"),
    "qwen3vl": ("tiny-qwen3vl-v1", partial(_write_tiny_qwen, family="qwen3vl"), "Qwen3-VL"),
    "llava": ("tiny-llava-v1", _write_tiny_llava, "LLaVA-1.5, byte-level BPE tokenizer"),
    "llava_sp": ("tiny-llava-sp-v1", partial(_write_tiny_llava, tokenizer="sp"), "LLaVA-1.5, Llama SentencePiece"),
    "llava_next": ("tiny-llava-next-v1", _write_tiny_llava_next, "LLaVA-NeXT (any resolution), Llama SentencePiece"),
    "internvl": ("tiny-internvl-v1", _write_tiny_internvl, "InternVL3.5 (HF format), Qwen3 language model"),
}


def build_tiny(kind: str, root: Path | None = None) -> Path:
    """Build (once) the tiny random-weight model ``kind`` (a key of `TINY_BUILDS`) with its processor; return its
    folder (``root``, default the cache)."""
    if kind not in TINY_BUILDS:
        raise ValueError(f"vlmeval-echosafe: unknown tiny model {kind!r}; known: {sorted(TINY_BUILDS)}")
    folder, write, _ = TINY_BUILDS[kind]
    return _build_atomically(root, folder, write)


def build_tiny_qwen2vl(root: Path | None = None) -> Path:
    """Build (once) a tiny random-weight Qwen2-VL with its processor; return its folder."""
    return build_tiny("qwen2vl", root)


def build_tiny_llava(root: Path | None = None) -> Path:
    """Build (once) a tiny random-weight LLaVA (CLIP tower + Llama) with its processor; return its folder."""
    return build_tiny("llava", root)


TINY_BUILDERS: dict[str, Callable[[Path | None], Path]] = {kind: partial(build_tiny, kind) for kind in TINY_BUILDS}
