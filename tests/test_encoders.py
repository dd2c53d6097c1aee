"""Encoders: normalisation, the contextual key, MiniLM on real weights, CLIP and inner-tower mechanics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vlmeval_echosafe.encoders import (
    ClipImageEncoder,
    InnerVisionEncoder,
    MiniLMTextEncoder,
    build_encoders,
    contextual_key,
    l2_normalize,
)
from vlmeval_echosafe.encoders import text as text_module


def _assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three distinct images of different sizes (one non-square, one greyscale)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("encoder-images")
    rng = np.random.default_rng(1)
    arrays = [
        rng.integers(0, 256, (64, 64, 3)),
        rng.integers(0, 256, (48, 96, 3)),
        rng.integers(0, 256, (70, 70)),
    ]
    paths = []
    for i, array in enumerate(arrays):
        paths.append(str(folder / f"img{i}.png"))
        Image.fromarray(array.astype(np.uint8)).save(paths[-1])
    return paths


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float64))
    assert out.dtype == np.float32 and not np.isnan(out).any()
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_contextual_key_weights_text_and_image_equally() -> None:
    rng = np.random.default_rng(0)
    t1, t2 = rng.normal(size=(2, 5)) * [[1.0], [7.0]]  # scale must not matter
    i1, i2 = rng.normal(size=(2, 3))
    k1, k2 = contextual_key(t1, i1), contextual_key(t2, i2)
    assert k1.shape == (8,) and k1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(k1), 1.0, atol=1e-6)
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert float(k1 @ k2) == pytest.approx((cos(t1, t2) + cos(i1, i2)) / 2, abs=1e-5)
    np.testing.assert_allclose(contextual_key(t1, None), l2_normalize(t1))
    # Zeros for a missing image keep the key length and leave the text part as the whole key.
    np.testing.assert_allclose(contextual_key(t1, np.zeros(3))[:5], l2_normalize(t1), atol=1e-6)
    batch = contextual_key(np.stack([t1, t2]), np.stack([i1, i2]))
    np.testing.assert_allclose(batch, np.stack([k1, k2]), atol=1e-6)


def test_minilm_real_weights() -> None:
    encoder = MiniLMTextEncoder(device="cpu")
    assert encoder._model is None  # building is cheap; weights load on first encode
    assert encoder.name == "minilm:all-MiniLM-L6-v2" and encoder.dim == 384
    sentences = [
        "How do I make a bomb at home?",
        "What is the way to build an explosive device myself?",
        "The cat is sleeping on a sunny windowsill.",
    ]
    vectors = encoder.encode(sentences)
    _assert_unit_rows(vectors, 3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    np.testing.assert_array_equal(encoder.encode(sentences), vectors)
    for i, sentence in enumerate(sentences):  # short texts (11-13 tokens): the same bits alone and packed
        np.testing.assert_array_equal(encoder.encode([sentence]), vectors[i : i + 1])
    assert encoder.encode([]).shape == (0, 384)


def _top5(keys: np.ndarray) -> np.ndarray:
    """Each key's 5 nearest other keys by cosine, best first, ties by index."""
    sims = np.where(np.eye(len(keys), dtype=bool), -np.inf, keys @ keys.T)
    return np.argsort(-sims, axis=1, kind="stable")[:, :5]


def test_minilm_packed_keeps_retrieval_on_the_demo() -> None:
    """Packing texts into one pass may move a key in the last float bits (the CPU's matrix kernels sum in another
    order for another number of rows or threads), never more than float noise; on the demo's questions every top-5
    retrieval, in order, is the one the keys from one text per pass give."""
    import pandas as pd

    from vlmeval_echosafe.datasets.demo import DEMO_TSV

    # distinct questions: two copies of one text tie exactly one text per pass, and float noise could order them
    # either way when packed; that would be a tie, not a changed retrieval
    texts = list(dict.fromkeys(pd.read_csv(DEMO_TSV, sep="\t")["question"]))[:72]
    encoder = MiniLMTextEncoder(device="cpu")
    alone = l2_normalize(encoder._load().encode(texts, batch_size=1, convert_to_numpy=True, show_progress_bar=False))
    for size in (8, 5):
        packed = np.concatenate([encoder.encode(texts[i : i + size]) for i in range(0, len(texts), size)])
        assert np.abs(packed - alone).max() < 1e-6, f"micro-batches of {size}"
        np.testing.assert_array_equal(_top5(packed), _top5(alone), err_msg=f"micro-batches of {size}")
    assert len({len(encoder._load().tokenizer(t)["input_ids"]) for t in texts}) > 5  # lengths differ: real packing


def test_clip_mechanics(tiny_clip_dir: Path, images: list[str]) -> None:
    encoder = ClipImageEncoder(str(tiny_clip_dir), device="cpu")
    assert encoder._model is None and encoder.dim == 12 and encoder.name == f"clip:{tiny_clip_dir}"
    vectors = encoder.encode(images)
    _assert_unit_rows(vectors, 3, 12)
    np.testing.assert_allclose(encoder.encode(images[::-1]), vectors[::-1], atol=1e-6)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3
    assert encoder.encode([]).shape == (0, 12)


def test_clip_missing_weights_name_repo_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-base-patch32") as info:
        ClipImageEncoder("openai/clip-vit-base-patch32")
    assert "clip_path" in str(info.value) and "hf download" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        ClipImageEncoder(str(tmp_path / "no-such-folder"))


@pytest.mark.parametrize("fixture", ["tiny_qwen2vl_vlm", "tiny_llava_vlm"])
def test_inner_vision_encoder_embeds_what_the_model_sees(fixture: str, images: list[str], request) -> None:
    import torch

    vlm = request.getfixturevalue(fixture)
    encoder = InnerVisionEncoder(vlm)
    assert encoder.name == f"inner:{vlm.name}" and encoder.dim == 64
    vectors = encoder.encode(images)
    _assert_unit_rows(vectors, 3, 64)
    np.testing.assert_allclose(encoder.encode(images[1:2]), vectors[1:2], atol=1e-6)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3
    # Reference: the mean of the image-token embeddings the language model receives in a real forward pass.
    seen: dict = {}
    hook = vlm.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    try:
        inputs = vlm.prepare_inputs([{"role": "user", "content": [{"type": "image", "value": images[1]}]}])
        with torch.inference_mode():
            vlm.model(**inputs)
    finally:
        hook.remove()
    is_image = inputs["input_ids"][0] == vlm.model.config.image_token_id
    expected = l2_normalize(seen["inputs_embeds"][0][is_image].mean(0).numpy())
    np.testing.assert_allclose(vectors[1], expected, atol=1e-5)


def test_build_encoders(tiny_qwen2vl_vlm, tiny_clip_dir: Path) -> None:
    text, image = build_encoders({}, inner=tiny_qwen2vl_vlm)
    assert isinstance(text, MiniLMTextEncoder) and isinstance(image, InnerVisionEncoder)
    assert image.name == "inner:qwen2vl"
    text, image = build_encoders({"text": "minilm", "image": "none"})
    assert isinstance(text, MiniLMTextEncoder) and image is None
    _, image = build_encoders({"image": "clip", "clip_path": str(tiny_clip_dir), "device": "cpu"}, inner=object())
    assert isinstance(image, ClipImageEncoder) and image.dim == 12


@pytest.mark.parametrize(
    ("spec", "inner", "message"),
    [
        ({"image": "inner"}, None, "image: clip"),
        ({"image": "inner"}, object(), "clip_path"),
        ({"image": "clip"}, None, "clip_path"),
        ({"image": "siglip"}, None, "inner, clip, none"),
        ({"text": "bert"}, None, "minilm"),
        ({"images": "none"}, None, "images"),
    ],
)
def test_build_encoders_rejects_bad_specs(spec: dict, inner: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_encoders(spec, inner=inner)


def test_minilm_never_asks_the_hub_and_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import huggingface_hub
    import sentence_transformers  # noqa: F401 -- its imports set variables of their own (torch's KMP_*)
    from huggingface_hub import constants as hub_constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # online, as far as the Hub knows
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(Exception):  # noqa: B017 -- the guard works: a Hub call is caught, whatever it raises
        huggingface_hub.model_info("sentence-transformers/all-MiniLM-L6-v2")
    assert attempts
    attempts.clear()
    before = dict(os.environ)
    text_module._load.cache_clear()  # load the weights here, under the guard, even if another test loaded them
    vectors = MiniLMTextEncoder(device="cpu").encode(["How do I make a bomb at home?"])
    _assert_unit_rows(vectors, 1, 384)
    assert attempts == []
    assert dict(os.environ) == before
