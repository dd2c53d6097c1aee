"""GuardFilter, ETA and CoCA on the tiny Qwen2-VL with their tiny guard / CLIP / reward twins: each equals the
undefended model token for token when it changes nothing (a guard that never flags, both ETA checks passing,
CoCA at amplification 0), alone and in a micro-batch, and does what it should when it acts."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest

from vlmeval_echosafe.api import load_defense
from vlmeval_echosafe.core.item import Item
from vlmeval_echosafe.models.guards import parse
from vlmeval_echosafe.paths import PACKAGE_DIR

INNER = "TinyQwen2VL"


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    """The first four demo rows (two unsafe/safe pairs) with their images as files."""
    frame = pd.read_csv(PACKAGE_DIR / "data" / "mmsafetybenchpp_demo.tsv", sep="\t", dtype=str)
    folder = tmp_path_factory.mktemp("demo-images")
    out = []
    for _, r in frame.head(4).iterrows():
        image = r["image"] if len(r["image"]) > 16 else frame.loc[int(r["image"]), "image"]  # a twin points at its pair
        path = folder / f"{r['index']}.png"
        path.write_bytes(base64.b64decode(image))
        row = {k: r[k] for k in ("index", "pair_id", "category", "mode", "label")}
        out.append(Item(r["question"], (str(path),), row, "demo"))
    return out


@pytest.fixture(scope="module")
def base(tiny_cache: Path, items: list[Item], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The undefended model's answers, one item at a time (B1) and as one micro-batch (B4)."""
    defense = load_defense(f"Base_{INNER}", tmp_path_factory.mktemp("base"))
    return {"B1": [defense.respond([i])[0].text for i in items], "B4": [r.text for r in defense.respond(items)]}


def _run(name: str, items: list[Item], work: Path, **settings) -> dict[str, tuple[list[str], list[dict]]]:
    out = {}
    for batch in ("B1", "B4"):
        defense = load_defense(name, work / batch, **settings)
        responses = [defense.respond([i])[0] for i in items] if batch == "B1" else defense.respond(items)
        out[batch] = ([r.text for r in responses], [r.record for r in responses])
    return out


def test_guard_formats_parse_as_the_model_cards_write_them() -> None:
    assert parse("safe", "llama-guard").unsafe is False
    unsafe = parse("\n\nunsafe\nS1,S10", "llama-guard")
    assert unsafe.unsafe is True and unsafe.categories == ["S1", "S10"]
    assert parse("Safety: Unsafe\nCategories: Violent", "qwen3guard").categories == ["Violent"]
    assert parse("Safety: Safe\nCategories: None\nRefusal: Yes", "qwen3guard").unsafe is False
    assert parse("Safety: Controversial\nCategories: PII", "qwen3guard", "unsafe").unsafe is True
    assert parse("Safety: Controversial\nCategories: PII", "qwen3guard", "safe").unsafe is False
    assert parse("I think it is fine", "llama-guard").unsafe is None
    assert parse("unsafe content found", "qwen3guard").unsafe is None


@pytest.mark.parametrize("row", ["GuardFilter", "GuardFilter-LlamaGuard3V", "GuardFilter-Qwen3Guard"])
def test_a_guard_that_never_flags_gives_the_base_answers(row, items, base, tmp_path) -> None:
    # threshold 1.0: P(unsafe) > 1 never holds, so every check passes
    runs = _run(f"{row}_{INNER}", items, tmp_path, threshold=1.0)
    for batch, (answers, records) in runs.items():
        assert answers == base[batch], batch
        assert all(r["blocked"] is None for r in records)
        assert all(r["guard_input"]["unsafe"] is False and r["guard_output"]["unsafe"] is False for r in records)
        assert all(0.0 <= r["guard_input"]["score"] <= 1.0 for r in records)
        assert all(r["cost"]["inner"]["calls"] == 1 and r["cost"]["guard_input"]["forward_passes"] > 0 for r in records)
    trace = tmp_path / "B4" / f"{row}_{INNER}" / f"{row}_{INNER}_demo_defense_trace.jsonl"
    assert len(trace.read_text().splitlines()) == len(items)


def test_a_flagged_exchange_gets_the_refusal(items, base, tmp_path) -> None:
    refusal = "No, I will not."
    blocked_in = load_defense(f"GuardFilter_{INNER}", tmp_path / "in", threshold=0.0, refusal=refusal)
    records = [r.record for r in blocked_in.respond(items)]
    assert all(r["blocked"] == "input" and "guard_output" not in r and "inner" not in r["cost"] for r in records)
    output_only = load_defense(
        f"GuardFilter_{INNER}", tmp_path / "out", threshold=0.0, refusal=refusal, input_check=False
    )
    responses = output_only.respond(items)
    assert [r.text for r in responses] == [refusal] * len(items)
    assert [r.record["answer_before_filter"] for r in responses] == base["B4"]
    assert all(r.record["blocked"] == "output" for r in responses)


def test_an_unparsed_guard_reply_is_decided_by_on_unparsed(items, base, tmp_path) -> None:
    # the tiny guards write gibberish: with the generated label deciding, every reply is unparsed
    passed = load_defense(f"GuardFilter_{INNER}", tmp_path / "pass", threshold=None, on_unparsed="pass")
    responses = passed.respond(items)
    assert [r.text for r in responses] == base["B4"]
    assert all(r.record["guard_unparsed"] == 2 for r in responses)
    blocked = load_defense(f"GuardFilter_{INNER}", tmp_path / "block", threshold=None)
    assert all(r.record["blocked"] == "input" for r in blocked.respond(items))


def test_coca_at_amplification_zero_is_the_base_model(items, base, tmp_path) -> None:
    for batch, (answers, records) in _run(f"CoCA_{INNER}", items, tmp_path, amplification=0.0).items():
        assert answers == base[batch], batch
        assert all(
            r["cost"]["inner"]["forward_passes"] == 2 * min(r["cost"]["inner"]["new_tokens"] + 1, 24) for r in records
        )


def test_coca_at_amplification_one_decodes_with_the_principle(items, tmp_path) -> None:
    from vlmeval_echosafe.defenses.coca import PRINCIPLE

    coca = load_defense(f"CoCA_{INNER}", tmp_path / "coca", amplification=1.0)
    prompted = load_defense(f"SafetyPrompt_{INNER}", tmp_path / "sp", prompt=PRINCIPLE)
    with_principle = [prompted.respond([i])[0].text for i in items]
    assert [r.text for r in coca.respond(items)] == with_principle
    amplified = load_defense(f"CoCA_{INNER}", tmp_path / "amp", amplification=3.0)
    assert [r.text for r in amplified.respond(items)] != with_principle


def test_eta_with_both_checks_passing_is_the_base_model(items, base, tmp_path) -> None:
    # the reward check passes: the CLIP check is never asked (the public code's order)
    for batch, (answers, records) in _run(f"ETA_{INNER}", items, tmp_path / "post", post_threshold=-1e9).items():
        assert answers == base[batch], batch
        assert all(r["branch"] == "vanilla" and r["post_safe"] and "clip_score" not in r for r in records)
    # the reward check fails, the CLIP check passes
    runs = _run(f"ETA_{INNER}", items, tmp_path / "pre", post_threshold=1e9, pre_threshold=2.0)
    for batch, (answers, records) in runs.items():
        assert answers == base[batch], batch
        assert all(r["branch"] == "vanilla" and not r["post_safe"] and r["pre_safe"] for r in records)


def test_eta_aligns_when_both_checks_fail(items, base, tmp_path) -> None:
    settings = {"post_threshold": 1e9, "pre_threshold": -2.0, "best_of_n": 3, "sentence_tokens": 8}
    first = load_defense(f"ETA_{INNER}", tmp_path / "a", **settings).respond(items[:2])
    again = load_defense(f"ETA_{INNER}", tmp_path / "b", **settings).respond(items[:2])
    assert [r.text for r in first] == [r.text for r in again]  # seeded sampling
    for response, plain in zip(first, base["B4"], strict=False):
        record = response.record
        assert record["branch"] == "aligned" and record["vanilla_answer"] == plain
        assert response.text.startswith("As an AI assistant")
        search = record["search"]
        assert search and all(len(s["candidates"]) == 3 for s in search)
        assert all(s["candidates"][s["chosen"]]["score"] == max(c["score"] for c in s["candidates"]) for s in search)
        if len(search) > 1 and not any(c["ended"] for c in search[1]["candidates"]):
            assert all(c["clip"] is not None for c in search[1]["candidates"])  # CLIP joins from sentence 2
        assert record["cost"]["reward"]["calls"] == 1 + 3 * len(search)


class _ChatModel:
    """A model that answers chat turns but shows no logits (a host or served model)."""

    inner_protocol = "chat"


@pytest.mark.parametrize("cls", ["CoCA", "ETA"])
def test_logit_methods_refuse_a_model_without_logits(cls, tmp_path) -> None:
    from vlmeval_echosafe.catalog import _classes

    with pytest.raises(TypeError, match="transformers backend"):
        _classes()[cls](_ChatModel(), name=f"{cls}_Chat", run_dir=tmp_path)


def test_the_cost_table_reads_the_defense_traces(tmp_path) -> None:
    from vlmeval_echosafe.report.defense_cost import cost_table

    run = tmp_path / "GuardFilter_X"
    run.mkdir()
    lines = [
        {
            "defense": "GuardFilter",
            "blocked": "input",
            "guard_unparsed": 1,
            "cost": {"guard_input": {"calls": 1, "forward_passes": 10, "prompt_tokens": 100, "new_tokens": 10}},
        },
        {
            "defense": "GuardFilter",
            "blocked": None,
            "guard_unparsed": 0,
            "cost": {
                "guard_input": {"calls": 1, "forward_passes": 10, "prompt_tokens": 100, "new_tokens": 10},
                "inner": {"calls": 1, "forward_passes": 20, "prompt_tokens": 50, "new_tokens": 20},
            },
        },
    ]
    trace = run / "GuardFilter_X_MMSafetyBenchPP_DemoMini_defense_trace.jsonl"
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    board = pd.DataFrame({"model": ["Base_X", "GuardFilter_X"], "dataset": ["MMSafetyBenchPP_DemoMini"] * 2})
    table = cost_table(tmp_path, board).set_index("model")
    row = table.loc["GuardFilter_X"]
    assert (row["items"], row["calls_per_item"], row["forward_passes_per_item"]) == (2, 1.5, 20.0)
    assert (row["prompt_tokens_per_item"], row["blocked_input"], row["guard_unparsed"]) == (125.0, 1, 1)
    assert pd.isna(table.loc["Base_X", "calls_per_item"])  # a row without a trace stays, with empty cost
