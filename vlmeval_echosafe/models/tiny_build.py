"""Building a tiny model folder: a fixed tokenizer corpus, seeded random weights, and an atomic, once-only,
multi-process-safe write into the cache (:mod:`.tiny` lists the families, :mod:`.tiny_families` writes them)."""

from __future__ import annotations

import os
import shutil
import string
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..paths import cache_root

# Marker written last into a finished build; a folder without it is treated as absent and rebuilt.
_COMPLETE = ".echosafe-tiny-complete"
_SEED = 1234
# The language-model sizes the tiny builds share (each adds its vocabulary, special ids and own sizes).
_SMALL_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "initializer_range": 0.15,
}

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
