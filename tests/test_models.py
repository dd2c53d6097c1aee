"""Mechanics of the local transformers backend and the tiny random-weight models (never output wording)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vlmeval_echosafe.models import TINY_BUILDERS, TransformersVLM


def _digest(folder: Path, name: str) -> str:
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", sorted(TINY_BUILDERS))
def test_tiny_build_is_deterministic_and_idempotent(kind: str, tmp_path: Path) -> None:
    a = TINY_BUILDERS[kind](tmp_path / "a")
    b = TINY_BUILDERS[kind](tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(a, name) == _digest(b, name), name
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    assert TINY_BUILDERS[kind](a) == a  # complete folder: returned as is, not rebuilt
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name]


@pytest.mark.parametrize("kind", sorted(TINY_BUILDERS))
def test_tiny_reloads_through_auto_classes(kind: str, tiny_cache: Path, tiny_image: str) -> None:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = TINY_BUILDERS[kind]()
    assert path.parent == tiny_cache
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.open(tiny_image).convert("RGB")], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert 0 < n_image_tokens <= 64
    logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.get_text_config().vocab_size)


@pytest.mark.parametrize("fixture", ["tiny_qwen2vl_vlm", "tiny_llava_vlm"])
def test_generate_is_greedy_and_deterministic(fixture: str, tiny_image: str, tmp_path: Path, request) -> None:
    from PIL import Image

    vlm = request.getfixturevalue(fixture)
    message = [{"type": "image", "value": tiny_image}, {"type": "text", "value": "Describe the image."}]
    first = vlm.generate(message, dataset="MMSafetyBenchPP")
    assert isinstance(first, str)
    assert vlm.generate(message) == first
    # A call with another image size and prompt length must leave no state behind (e.g. Qwen's rope_deltas).
    Image.new("RGB", (200, 120), (30, 160, 90)).save(tmp_path / "other.png")
    other = [
        {"type": "image", "value": str(tmp_path / "other.png")},
        {"type": "text", "value": "A longer " * 9},
    ]
    assert isinstance(vlm.generate(other), str)
    assert vlm.generate(message) == first


@pytest.mark.parametrize("fixture", ["tiny_qwen2vl_vlm", "tiny_llava_vlm"])
def test_generation_never_emits_suppressed_tokens(fixture: str, tiny_image: str, request) -> None:
    import torch

    vlm = request.getfixturevalue(fixture)
    turns = [{"role": "user", "content": [{"type": "image", "value": tiny_image}, {"type": "text", "value": "Hi"}]}]
    inputs = vlm.prepare_inputs(turns)
    with torch.inference_mode():
        out = vlm.model.generate(**inputs, **vlm.generation_kwargs(max_new_tokens=24))
    new = set(out[0, inputs["input_ids"].shape[1] :].tolist())
    image_token = vlm.model.config.image_token_id
    assert image_token in vlm.suppress_token_ids and not set(vlm.eos_token_ids) & set(vlm.suppress_token_ids)
    assert not new & set(vlm.suppress_token_ids)


def test_generate_turns_multi_turn(tiny_qwen2vl_vlm, tiny_image: str) -> None:
    img = {"type": "image", "value": tiny_image}
    turns = [
        {"role": "user", "content": [img, {"type": "text", "value": "What is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "value": "A picture."}]},
        {"role": "user", "content": [img, {"type": "text", "value": "Was that answer safe?"}]},
    ]
    assert tiny_qwen2vl_vlm.prepare_inputs(turns)["image_grid_thw"].shape[0] == 2
    answer = tiny_qwen2vl_vlm.generate_turns(turns)
    assert isinstance(answer, str)
    assert tiny_qwen2vl_vlm.generate_turns(turns) == answer


@pytest.mark.parametrize("kind", sorted(TINY_BUILDERS))
def test_tiny_by_name_accepts_vlmevalkit_kwargs(kind: str, tiny_cache: Path, tiny_image: str) -> None:
    vlm = TransformersVLM(tiny=kind, max_new_tokens=8, use_vllm=False)
    assert vlm.model_path.parent == tiny_cache and vlm.is_api is False and vlm.INTERLEAVE is False
    assert vlm.device == "cpu" or vlm.device == "cuda"
    assert isinstance(vlm.generate([{"type": "image", "value": tiny_image}, {"type": "text", "value": "Hi"}]), str)


def test_uncached_repo_id_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    repo = "echosafe-test/not-a-cached-model"
    with pytest.raises(FileNotFoundError, match=repo) as info:
        TransformersVLM(model_path=repo)
    assert str(tmp_path / "empty-hf-cache") in str(info.value)
    assert info.value.__cause__ is not None


def test_missing_local_folder_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        TransformersVLM(model_path=str(tmp_path / "does-not-exist"))
    with pytest.raises(ValueError):
        TransformersVLM()
    with pytest.raises(ValueError):
        TransformersVLM(model_path="a/b", tiny="qwen2vl")
    with pytest.raises(ValueError):
        TransformersVLM(tiny="no-such-tiny-model")
