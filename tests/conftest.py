"""Shared fixtures: tiny random-weight VLMs built once per test session into a temporary cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# Every tiny model kind, one per architecture and tokenizer style the backend runs; tests parametrised over
# the families use these names with the `tiny_vlms` fixture.
FAMILIES = ["qwen2vl", "qwen25vl", "qwen3vl", "llava", "llava_sp", "llava_next", "internvl"]


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point VLMEVAL_ECHOSAFE_CACHE at a session temp dir and build every tiny model there once."""
    from vlmeval_echosafe.models.tiny import TINY_BUILDERS

    root = tmp_path_factory.mktemp("echosafe-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLMEVAL_ECHOSAFE_CACHE", str(root))
        for build in TINY_BUILDERS.values():
            build()
        yield root


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 64x64 RGB PNG with random pixels (path as a string, like VLMEvalKit messages carry)."""
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "tiny64.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return str(path)


def _tiny_vlm(kind: str):
    from vlmeval_echosafe.models import TransformersVLM

    return TransformersVLM(tiny=kind, max_new_tokens=12, device="cpu")


@pytest.fixture(scope="session")
def tiny_vlms(tiny_cache: Path) -> Callable[[str], object]:
    """``tiny_vlms(kind)``: a TransformersVLM on that tiny model (CPU, 12 new tokens), loaded on first request and
    shared for the session, so do not mutate it."""
    loaded: dict[str, object] = {}

    def get(kind: str):
        if kind not in loaded:
            loaded[kind] = _tiny_vlm(kind)
        return loaded[kind]

    return get


@pytest.fixture(scope="session")
def tiny_qwen2vl_vlm(tiny_vlms):
    """A TransformersVLM on the tiny Qwen2-VL (CPU, 12 new tokens); shared, so do not mutate it."""
    return tiny_vlms("qwen2vl")


@pytest.fixture(scope="session")
def tiny_llava_vlm(tiny_vlms):
    """A TransformersVLM on the tiny LLaVA (CPU, 12 new tokens); shared, so do not mutate it."""
    return tiny_vlms("llava")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight CLIP (32x32 images, 12-d projection) in a local folder, with no tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            **small,
            "vocab_size": 64,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**small, "image_size": 32, "patch_size": 8, "initializer_range": 0.15},
        projection_dim=12,
    )
    folder = tmp_path_factory.mktemp("tiny-clip")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
