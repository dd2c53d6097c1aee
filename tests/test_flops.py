"""FLOPs estimate: the formula on a hand-computed case, the real shapes' parameter counts, the table's rows."""

import pytest

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
    assert "GuardFilter: not computed (" in out and "ETA: not computed (" in out  # listed, with why


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


def test_every_registered_defense_row_is_in_the_table_or_says_why_not() -> None:
    from vlmeval_echosafe.catalog import defense_entries
    from vlmeval_echosafe.report.flops import NOT_COMPUTED

    table = flops_table(_bench(370))
    for name in defense_entries()[0]:
        family = name.split("-")[0] if name.startswith(("GuardFilter", "EchoSafe-Paper")) else name
        listed = family in NOT_COMPUTED or any(row == family or row.startswith(f"{family} (") for row in table)
        assert listed or name == "EchoSafe-Paper", name
