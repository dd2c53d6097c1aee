"""Tiny random-weight VLMs built locally, for tests and smoke runs without any downloadable weights.

No VLM weights can be fetched on the machines this plugin is tested on, so the image-side code runs against
models built here: real Hugging Face architectures (Qwen2-VL, LLaVA) with stock processors, a byte-level BPE
tokenizer trained on a fixed corpus, and seeded random weights. Their output is gibberish; tests must assert
mechanics, never content. Each build is deterministic (byte-identical safetensors) and takes a few seconds.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from collections.abc import Callable
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


def _seeded_model(cls, config):
    """Instantiate `cls(config)` with fixed seeds so two builds give byte-identical weights."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
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


def _write_tiny_qwen2vl(out: Path) -> None:
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(_QWEN_SPECIALS, vocab_size=768),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=_QWEN_SPECIALS[1:],
        chat_template=_QWEN_CHAT_TEMPLATE,
        model_max_length=4096,
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    # 28x28 pixels per image token (patch 14, merge 2): 4 to 36 image tokens per image.
    pixels = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 36}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels),
        tokenizer=tok,
        chat_template=_QWEN_CHAT_TEMPLATE,
    )
    config = Qwen2VLConfig(
        text_config={
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
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,  # the merger projects into the text hidden size
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "initializer_range": 0.15,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        initializer_range=0.15,
    )
    model = _seeded_model(Qwen2VLForConditionalGeneration, config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.generation_config.suppress_tokens = _unprintable_ids(tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)


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


def _write_tiny_llava(out: Path) -> None:
    from tokenizers import processors
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    bpe = _train_bpe(_LLAVA_SPECIALS, vocab_size=768)
    bos_id = bpe.token_to_id("<s>")
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
        chat_template=_LLAVA_CHAT_TEMPLATE,
        model_max_length=4096,
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in _LLAVA_SPECIALS}
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
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
            projection_dim=32,
            initializer_range=0.15,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            initializer_range=0.15,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"],
        ),
        image_token_index=ids["<image>"],
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        initializer_range=0.15,
    )
    model = _seeded_model(LlavaForConditionalGeneration, config)
    model.generation_config.eos_token_id = ids["</s>"]
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.bos_token_id = ids["<s>"]
    model.generation_config.suppress_tokens = _unprintable_ids(tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def build_tiny_qwen2vl(root: Path | None = None) -> Path:
    """Build (once) a tiny random-weight Qwen2-VL with its processor; return its folder."""
    return _build_atomically(root, "tiny-qwen2vl-v1", _write_tiny_qwen2vl)


def build_tiny_llava(root: Path | None = None) -> Path:
    """Build (once) a tiny random-weight LLaVA (CLIP tower + Llama) with its processor; return its folder."""
    return _build_atomically(root, "tiny-llava-v1", _write_tiny_llava)


TINY_BUILDERS: dict[str, Callable[[Path | None], Path]] = {
    "qwen2vl": build_tiny_qwen2vl,
    "llava": build_tiny_llava,
}
