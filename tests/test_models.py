"""Mechanics of the local transformers backend and the tiny random-weight models (never output wording)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import FAMILIES

from vlmeval_echosafe.models import TINY_BUILDERS, TransformersVLM


def _ask(vlm: TransformersVLM, message: list[dict], dataset: str | None = None) -> str:
    """One request, as a defense sends it through the inner-model protocol (a single call of the backend)."""
    from vlmeval_echosafe.core.inner import adapt

    return adapt(vlm).ask(message, dataset)


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


def test_every_tiny_kind_is_a_tested_family() -> None:
    assert sorted(FAMILIES) == sorted(TINY_BUILDERS)


@pytest.mark.parametrize("kind", FAMILIES)
def test_generate_is_greedy_and_deterministic(kind: str, tiny_image: str, tmp_path: Path, tiny_vlms) -> None:
    from PIL import Image

    vlm = tiny_vlms(kind)
    message = [{"type": "image", "value": tiny_image}, {"type": "text", "value": "Describe the image."}]
    first = _ask(vlm, message, dataset="MMSafetyBenchPP")
    assert isinstance(first, str)
    assert _ask(vlm, message) == first
    # A call with another image size and prompt length must leave no state behind (e.g. Qwen's rope_deltas).
    Image.new("RGB", (200, 120), (30, 160, 90)).save(tmp_path / "other.png")
    other = [
        {"type": "image", "value": str(tmp_path / "other.png")},
        {"type": "text", "value": "A longer " * 9},
    ]
    assert isinstance(_ask(vlm, other), str)
    assert _ask(vlm, message) == first


@pytest.mark.parametrize("kind", FAMILIES)
def test_generation_never_emits_suppressed_tokens(kind: str, tiny_image: str, tiny_vlms) -> None:
    import torch

    vlm = tiny_vlms(kind)
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
    from vlmeval_echosafe.defenses.undefended import Undefended
    from vlmeval_echosafe.vlmevalkit.model import HostDefense

    vlm = TransformersVLM(tiny=kind, max_new_tokens=8, use_vllm=False)
    # the backend is no VLMEvalKit model any more: the host sees the plugin's one model class around it
    host = HostDefense(Undefended(vlm))
    assert vlm.model_path.parent == tiny_cache and host.is_api is False and host.INTERLEAVE is False
    assert vlm.inner_protocol == "kv-session"
    assert vlm.device == "cpu" or vlm.device == "cuda"
    assert isinstance(_ask(vlm, [{"type": "image", "value": tiny_image}, {"type": "text", "value": "Hi"}]), str)


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


def _image(path: Path, size: tuple[int, int], seed: int = 0) -> str:
    import numpy as np
    from PIL import Image

    w, h = size
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_llava_next_any_resolution_gives_size_dependent_tiles_and_tokens(tiny_vlms, tmp_path: Path) -> None:
    """LLaVA-NeXT picks a tile grid by image size and aspect ratio and un-pads the tiles' features: images of
    other shapes get other numbers of tiles and of image tokens, and the model consumes exactly those tokens."""
    import torch

    vlm = tiny_vlms("llava_next")
    sizes = [(40, 40), (120, 40), (40, 120), (200, 80), (90, 90)]
    tiles, tokens = [], []
    for i, size in enumerate(sizes):
        path = _image(tmp_path / f"{i}.png", size, seed=i)
        turns = [{"role": "user", "content": [{"type": "image", "value": path}, {"type": "text", "value": "Hi"}]}]
        inputs = vlm.prepare_inputs(turns)
        tiles.append(int(inputs["pixel_values"].shape[1]))  # (images, tiles incl. the overview, C, H, W)
        tokens.append(int((inputs["input_ids"] == vlm.model.config.image_token_id).sum()))
        with torch.inference_mode():
            feats = vlm.model.get_image_features(
                pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]
            ).pooler_output
        assert feats[0].shape[0] == tokens[-1]
    assert len(set(tiles)) >= 2 and len(set(tokens)) >= 4, (tiles, tokens)


def test_internvl_tiles_by_aspect_ratio(tiny_vlms, tmp_path: Path) -> None:
    vlm = tiny_vlms("internvl")
    counts = []
    for i, size in enumerate([(56, 56), (112, 56), (56, 168), (112, 112)]):
        path = _image(tmp_path / f"{i}.png", size, seed=i)
        turns = [{"role": "user", "content": [{"type": "image", "value": path}, {"type": "text", "value": "Hi"}]}]
        inputs = vlm.prepare_inputs(turns)
        n_tokens = int((inputs["input_ids"] == vlm.model.config.image_token_id).sum())
        assert n_tokens == inputs["pixel_values"].shape[0] * vlm.model.config.image_seq_length
        counts.append(inputs["pixel_values"].shape[0])
    assert counts[0] == 1 and len(set(counts)) >= 3, counts


def test_sentencepiece_llava_tokenizer_follows_llama_conventions(tiny_cache: Path) -> None:
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(TINY_BUILDERS["llava_sp"]()).tokenizer
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 258]) == ["<unk>", "<s>", "</s>", "<0x00>", "<0xFF>"]
    safe = tok.convert_ids_to_tokens(tok(" safe", add_special_tokens=False).input_ids)
    unsafe = tok.convert_ids_to_tokens(tok(" unsafe", add_special_tokens=False).input_ids)
    assert safe[0].startswith("▁") and unsafe[0].startswith("▁")  # word-boundary pieces
    assert len(safe) != len(unsafe), (safe, unsafe)
    ids = tok("héllo 日本").input_ids
    assert ids[0] == tok.bos_token_id  # <s> added, as Llama does
    pieces = tok.convert_ids_to_tokens(ids)
    assert "<0xC3>" in pieces and "<0xE6>" in pieces  # characters outside the vocabulary fall back to bytes
    assert tok.decode(ids, skip_special_tokens=True) == "héllo 日本"
    assert tok.convert_tokens_to_ids("<image>") >= 259 and tok.pad_token == "<pad>"


def test_family_mismatch_is_refused(tiny_cache: Path) -> None:
    folder = TINY_BUILDERS["qwen25vl"]()
    with pytest.raises(ValueError, match="'qwen2_5_vl' checkpoint.*family: qwen3_vl.*wrappers/models.yaml"):
        TransformersVLM(model_path=str(folder), family="qwen3_vl")


# The open models of the paper's tables and the tiny model that runs the same code.
PAPER_MODELS = {
    "Qwen2.5-VL-7B": "TinyQwen25VL",
    "LLaVA-1.5-7B": "TinyLLaVASP",
    "LLaVA-NeXT-7B": "TinyLLaVANeXT",
    "Qwen3-VL-8B": "TinyQwen3VL",
    "InternVL3.5-8B": "TinyInternVL",
}


def test_paper_models_share_class_and_family_with_a_tiny_twin(tiny_cache: Path) -> None:
    from transformers import AutoConfig

    from vlmeval_echosafe.catalog import model_entries

    entries = model_entries()
    for real, tiny in PAPER_MODELS.items():
        spec, twin = entries[real], entries[tiny]
        assert spec["class"] == twin["class"] == "TransformersVLM" and spec["family"] == twin["family"], real
        assert "/" in spec["model_path"] and not spec["model_path"].startswith(("/", "."))  # a hub id
        assert AutoConfig.from_pretrained(TINY_BUILDERS[twin["tiny"]]()).model_type == spec["family"]
    assert entries["InternVL3.5-8B"]["model_path"].endswith("-HF")  # HF format, no remote code


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_paper_model_without_weights_names_the_repo(name: str, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    from vlmeval_echosafe.catalog import model_entries

    empty = tmp_path / "empty-hf-cache"
    empty.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(empty))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = dict(model_entries()[name])
    spec.pop("class")
    with pytest.raises(FileNotFoundError, match=spec["model_path"]) as info:
        TransformersVLM(**spec)
    assert str(empty) in str(info.value) and "model_path" in str(info.value)


@pytest.mark.parametrize("kind", FAMILIES)
def test_backend_calls_nothing_deprecated(kind: str, tiny_cache: Path, tiny_image: str) -> None:
    """Every backend path (load, generate, batch, sessions, constrained decoding, image features and their handoff)
    runs on the installed transformers without a FutureWarning or DeprecationWarning raised in transformers or
    attributed to this package (deprecated arguments warn at the caller's line)."""
    import warnings

    from vlmeval_echosafe.defenses.echosafe_prompts import form_budget, form_grammar
    from vlmeval_echosafe.models.constrained import Constraint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vlm = TransformersVLM(tiny=kind, max_new_tokens=4, device="cpu")
        turns = [
            [{"role": "user", "content": [{"type": "image", "value": tiny_image}, {"type": "text", "value": q}]}]
            for q in ("Hi", "What is shown here?")
        ]
        vlm.image_features([tiny_image])
        vlm.generate_turns(turns[0])
        _, session = vlm.start_batch(turns)
        texts = [vlm.next_turn_text(session, "Reflect.", row) for row in range(2)]
        vlm.extend_batch(session, texts, max_new_tokens=3)
        form = Constraint(form_grammar(), line_tokens=3, max_new_tokens=form_budget(3))
        vlm.extend_batch(session, ["\n", "\n"], max_new_tokens=None, stop=None, constraint=form)
    ours = [
        f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning))
        and any(part in w.filename for part in ("/transformers/", "/vlmeval_echosafe/"))
    ]
    assert not ours, "\n".join(ours)


def test_installed_transformers_is_in_the_declared_range() -> None:
    """The suite runs on the version it tests: setup.cfg's bounds must admit the installed transformers."""
    import configparser
    import importlib.metadata

    from packaging.requirements import Requirement

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    reqs = [Requirement(line) for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    (spec,) = [r.specifier for r in reqs if r.name == "transformers"]
    assert spec.contains(importlib.metadata.version("transformers")), spec
    assert any(s.operator == "<" for s in spec) and any(s.operator == ">=" for s in spec), spec
