"""FLOPs estimate: the formula on a hand-computed case, the real shapes' parameter counts, the table's rows."""

import pytest
import yaml

from vlmeval_echosafe.report.flops import Model, Transformer, Vision, Workload, flops_table, item_flops, load_shapes

TINY = Transformer(layers=2, hidden=4, intermediate=8, heads=2, kv_heads=1, head_dim=2, vocab=10, mlp="gated")


def test_formula_by_hand() -> None:
    # per layer: q 4x4 + k,v 2 x (4x2) + o 4x4 = 48; gated MLP 3 x 4 x 8 = 96; two layers: 288
    assert TINY.params == 288
    # 3 new tokens after 2 cached attend to 3 + 4 + 5 = 12 positions: 2*288*3 + 2 layers * 12 * d_attn 4 * 2
    assert TINY.forward(3, 2) == 2 * 288 * 3 + 2 * 2 * 12 * 4 == 1920
    assert TINY.forward(3, causal=False) == 2 * 288 * 3 + 2 * 2 * 9 * 4  # every token sees all 3
    assert TINY.lm_head(3) == 2 * 4 * 10 * 3
    vit = Vision(
        layers=1, hidden=2, intermediate=4, mlp="plain", patches_per_image=3, tokens_per_image=1, projector_params=5
    )
    # per layer 4*2*2 + 2*2*4 = 32; tower 2*32*3 + 2*1*9*2; projector 2*5*1
    assert vit.per_image() == 192 + 36 + 10
    w = Workload(images=1, prompt_text=1, added_text=0, answer=3, reflect_prompt=2, reflect=1, key_text=3)
    parts = item_flops(Model("tiny", TINY, vit), TINY, w)
    assert parts["answer_prefill"] == TINY.forward(2)  # 1 image token + 1 text token
    assert parts["answer_decode"] == TINY.forward(3, 2) + TINY.lm_head(3)
    assert parts["reflect_prefill"] == TINY.forward(2, 5) and parts["reflect_decode"] == TINY.forward(1, 7) + 80
    assert parts["key_encoder"] == TINY.forward(3, causal=False) and parts["vision"] == 238


def test_real_shapes() -> None:
    models, encoder = load_shapes()
    assert {"Qwen2.5-VL-7B", "LLaVA-1.5-7B", "Qwen3-VL-8B", "InternVL3.5-8B"} <= set(models)
    # Qwen2.5-7B's published per-layer numel: 29,360,128 (attention) + 203,685,888 (MLP), 28 layers
    assert models["Qwen2.5-VL-7B"].text.params == 28 * (29_360_128 + 203_685_888)
    assert 6.0e9 < models["LLaVA-1.5-7B"].text.params < 6.8e9  # Llama-2-7B without embeddings: 6.48B
    assert 2.0e7 > encoder.params > 1.0e7  # MiniLM-L6 without embeddings: 10.6M


def _bench(echo_prompt: float) -> dict:
    per = lambda prompt, follow: {"answer_prompt_tokens": prompt, "answer_tokens": 256, "follow_up_tokens": follow}  # noqa: E731
    parts = {"embed": 0.0}
    return {
        "counts": {
            "images_per_item": 1.0,
            "tiny_vision_tokens_per_image": 16.0,
            "question_tiny_tokens": 60.0,
            "question_minilm_tokens": 30.0,
            "reflect_template_tiny_tokens": 150.0,
        },
        "models": {
            "Base": {"per_item": per(115, 0)},
            "EchoSafe": {"per_item": per(echo_prompt, 47), "parts_mean_s": parts},
            "EchoSafe@B8/s1": {"per_item": per(echo_prompt, 47), "parts_mean_s": parts},
        },
    }


def test_table_rows() -> None:
    table = flops_table(_bench(370))
    assert all(v == pytest.approx(1.0) for v in table["Base"].values())
    for name, echo in table["EchoSafe"].items():
        assert echo > 1.0, name
        assert table["EchoSafe@B8/s1"][name] == echo  # same tokens, same FLOPs
        assert table["EchoSafe-NoRetrieval"][name] < echo
        assert table["EchoSafe-k1"][name] < table["EchoSafe-k3"][name] < echo < table["EchoSafe-k10"][name]
        assert table["EchoSafe-NoReflection"][name] < echo
    # more insight text, more FLOPs
    assert flops_table(_bench(500))["EchoSafe"]["Qwen2.5-VL-7B"] > table["EchoSafe"]["Qwen2.5-VL-7B"]


def test_command_prints_every_row(capsys) -> None:
    from pathlib import Path

    from vlmeval_echosafe.report.flops import main

    main([str(Path(__file__).resolve().parents[1] / "benchmarks/results/overhead_cpu_256.json")])
    out = capsys.readouterr().out
    assert out.startswith("FLOPs vs Base per item (ESTIMATE; paper: EchoSafe 1.69x)")
    for row in ("Base", "EchoSafe", "EchoSafe@B8", "EchoSafe@B8/s1", "EchoSafe-NoRetrieval", "EchoSafe-k10"):
        assert f"| {row} | " in out
    for row in ("ECSO (no item flagged)", "ECSO (every item flagged)", "AdaShield-A (prompt applied to every item)"):
        assert f"| {row} | " in out
    for row in ("GuardFilter (nothing flagged)", "GuardFilter-Qwen3Guard (every request blocked)"):
        assert f"| {row} | " in out
    assert "| ETA (no answer flagged) | " in out and "| ETA (every answer aligned) | " in out
    assert "not computed" not in out  # every registered auxiliary model has shapes


def test_baselines_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """ECSO's calls, AdaShield-A's key and shield, the prompt baselines and CoCA's two rows, on the tiny shapes."""
    from vlmeval_echosafe.report import flops

    monkeypatch.setattr(flops, "_english_tokens", lambda text: 10)  # every prompt text: 10 tokens
    vit = Vision(
        layers=1, hidden=2, intermediate=4, mlp="plain", patches_per_image=3, tokens_per_image=1, projector_params=5
    )
    base = Workload(images=1, prompt_text=3, added_text=0, answer=4, key_text=5)
    rows = flops.baseline_flops(Model("tiny", TINY, vit), TINY, base)
    answer = 238 + TINY.forward(4) + TINY.forward(4, 4) + TINY.lm_head(4)  # 1 image token + 3 text tokens
    # the self-check: a fresh request with the image, its template (10), the question's prompt (3) and the answer (4)
    check = 238 + TINY.forward(18) + TINY.forward(2, 18) + TINY.lm_head(2)
    assert rows["ECSO (no item flagged)"] == answer + check
    caption = 238 + TINY.forward(14) + TINY.forward(128, 14) + TINY.lm_head(128)
    hinted = TINY.forward(3 + 10 + 128) + TINY.forward(4, 141) + TINY.lm_head(4)  # text only: no image
    assert rows["ECSO (every item flagged)"] == answer + check + caption + hinted
    key = TINY.forward(5, causal=False)
    assert rows["AdaShield-A (no prompt applied)"] == answer + key
    prompted = 238 + TINY.forward(15) + TINY.forward(4, 15) + TINY.lm_head(4)  # 10 prompt tokens + the separator
    assert rows["SafetyPrompt"] == rows["FigStep"] == rows["AdaShield-S"] == prompted
    assert rows["AdaShield-A (prompt applied to every item)"] == prompted + key
    assert rows["CoCA"] == answer + prompted


def test_every_registered_defense_row_is_in_the_table() -> None:
    from vlmeval_echosafe.catalog import defense_entries
    from vlmeval_echosafe.report.flops import not_computed

    table = flops_table(_bench(370))
    assert not_computed() == {}
    for name in defense_entries()[0]:
        listed = any(row == name or row.startswith(f"{name} (") for row in table)
        assert listed or name == "EchoSafe-Paper", name  # EchoSafe-Paper: EchoSafe's tokens, another stream name


def test_a_guard_without_shapes_is_named_not_hidden(tmp_path) -> None:
    from vlmeval_echosafe.paths import config_file
    from vlmeval_echosafe.report.flops import SHAPES_FILE, not_computed

    raw = yaml.safe_load(config_file(SHAPES_FILE).read_text())
    del raw["aux_models"]["Qwen/Qwen3Guard-Gen-4B"]
    shapes = tmp_path / "shapes.yaml"
    shapes.write_text(yaml.safe_dump(raw))
    missing = not_computed(shapes)
    assert set(missing) == {"GuardFilter-Qwen3Guard"} and "Qwen/Qwen3Guard-Gen-4B" in missing["GuardFilter-Qwen3Guard"]
    table = flops_table(_bench(370), shapes)
    assert (
        not any(row.startswith("GuardFilter-Qwen3Guard") for row in table) and "GuardFilter (nothing flagged)" in table
    )


def test_aux_shapes_match_published_sizes() -> None:
    """The derived guard and reward shapes add up to the sizes their model cards give (embeddings included)."""
    from vlmeval_echosafe.report.flops import load_aux

    aux = load_aux()

    def total(name: str, tied: bool = False) -> float:
        m = aux[name]
        embed = (1 if tied else 2) * m.text.vocab * m.text.hidden
        vision = 0.0
        if m.vision:
            v = m.vision
            vision = v.layers * (4 * v.hidden**2 + 2 * v.hidden * v.intermediate) + v.projector_params
        return m.text.params + embed + vision

    assert 11.5e9 < total("meta-llama/Llama-Guard-4-12B") < 12.5e9  # "12 billion parameters"
    assert 3.8e9 < total("Qwen/Qwen3Guard-Gen-4B", tied=True) < 4.2e9
    assert 7.8e9 < total("RLHFlow/ArmoRM-Llama3-8B-v0.1") < 8.2e9
    vit = Vision(layers=1, hidden=2, intermediate=4, mlp="plain", patches_per_image=4, tokens_per_image=0,
                 projector_params=0, tiles=2)  # fmt: skip
    assert vit.per_image() == 2 * 32 * 4 + 2 * 1 * (4 * 4 / 2) * 2  # two tiles of 2: attention halves


def test_guard_filter_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both checks are fresh guard requests (policy prompt, conversation, image when shown, verdict)."""
    from vlmeval_echosafe.defenses.guard_filter import GuardFilterSettings
    from vlmeval_echosafe.report import flops

    monkeypatch.setattr(flops, "_english_tokens", lambda text: 10)  # the policy prompt: 10 tokens
    vit = Vision(
        layers=1, hidden=2, intermediate=4, mlp="plain", patches_per_image=3, tokens_per_image=1, projector_params=5
    )
    model = Model("tiny", TINY, vit)
    base = Workload(images=1, prompt_text=3, added_text=0, answer=4)
    answer = 238 + TINY.forward(4) + TINY.forward(4, 4) + TINY.lm_head(4)
    check_in = 238 + TINY.forward(14) + TINY.forward(2, 14) + TINY.lm_head(2)  # image + policy 10 + request 3
    check_out = 238 + TINY.forward(18) + TINY.forward(2, 18) + TINY.lm_head(2)  # ... + the answer 4
    settings = GuardFilterSettings(guard={"format": "llama-guard", "model_path": "g"})
    ends = flops.guard_flops(model, model, settings, base)
    assert ends == {"nothing flagged": check_in + answer + check_out, "every request blocked": check_in}
    text_only = GuardFilterSettings(guard={"format": "qwen3guard", "model_path": "g", "images": False})
    blind_in = TINY.forward(13) + TINY.forward(12, 13) + TINY.lm_head(12)  # no image; a 12-token verdict
    assert flops.guard_flops(model, Model("g", TINY), text_only, base)["every request blocked"] == blind_in
    scored = GuardFilterSettings(guard={"format": "llama-guard", "model_path": "g"}, threshold=0.5, output_check=False)
    ends = flops.guard_flops(model, model, scored, base)
    assert ends["every request blocked"] == check_in + 238 + TINY.forward(14)  # + the scoring pass
    assert ends["nothing flagged"] == ends["every request blocked"] + answer


def test_eta_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """ETA's reward check, CLIP check and the search's rows per sentence, on tiny shapes: the request is prefilled
    once, and each sentence's rows read the kept text after its cache."""
    from vlmeval_echosafe.defenses.eta import ETASettings
    from vlmeval_echosafe.report import flops

    monkeypatch.setattr(flops, "_english_tokens", lambda text: 10)  # every prompt text: 10 tokens
    monkeypatch.setattr(flops, "ETA_SENTENCE_TOKENS", 2)
    monkeypatch.setattr(flops, "REWARD_TEMPLATE_TOKENS", 1)
    vit = Vision(
        layers=1, hidden=2, intermediate=4, mlp="plain", patches_per_image=3, tokens_per_image=1, projector_params=5
    )
    inner, clip = Model("tiny", TINY, vit), Model("clip", TINY, vit)
    base = Workload(images=1, prompt_text=3, added_text=0, answer=4)  # 4 answer tokens: two sentences of 2
    ends = flops.eta_flops(inner, Model("rm", TINY), clip, ETASettings(best_of_n=2), base)
    answer = 238 + TINY.forward(4) + TINY.forward(4, 4) + TINY.lm_head(4)
    post = TINY.forward(10 + 1 + 4)  # rm prompt, template, answer
    pre = 238 + TINY.forward(12)  # CLIP: the image, the prompt + 2
    prefill = 238 + TINY.forward(4)  # the image and the 1 + 3 prompt positions, once
    # per row: the kept text (the 10-token prefix, then + 2) after the 4 cached positions, then 2 sampled tokens
    first = 2 * (TINY.forward(10, 4) + TINY.forward(2, 14) + TINY.lm_head(2)) + 2 * TINY.forward(11 + 10 + 2)
    second = 2 * (TINY.forward(12, 4) + TINY.forward(2, 16) + TINY.lm_head(2)) + 2 * TINY.forward(11 + 12 + 2)
    second += 238 + 2 * TINY.forward(4)  # CLIP from the second sentence: the image once, each candidate's text
    aligned = answer + post + pre + prefill + first + second
    assert ends == {"no answer flagged": answer + post, "every answer aligned": aligned}
