"""EchoSafe with the packed MiniLM keys gives what it gave with one text per pass (the encoder before packing): the
same predictions, trace decisions and retrievals, and the same bank insights, on the demo."""

import json

import numpy as np

from vlmeval_echosafe.encoders import l2_normalize


def _one_text_per_pass(encoder):
    """The encoder as it was: sentence-transformers, one text per forward pass, then normalised."""

    def encode(items):
        if not items:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        model = encoder._load()
        return l2_normalize(model.encode(list(items), batch_size=1, convert_to_numpy=True, show_progress_bar=False))

    return encode


def _run(tmp_path, inner, label: str, old: bool) -> tuple:
    from vlmeval.dataset import build_dataset

    from vlmeval_echosafe.core.run import DatasetRun
    from vlmeval_echosafe.datasets import order
    from vlmeval_echosafe.echosafe import EchoSafe
    from vlmeval_echosafe.memory import MemoryBank
    from vlmeval_echosafe.vlmevalkit.model import HostDefense

    dataset = build_dataset("MMSafetyBenchPP_Demo")
    run_dir = tmp_path / label
    core = EchoSafe(inner, name="EchoSafe_TinyQwen2VL", run_dir=run_dir, settings={"reflect_tokens": 6})
    if old:
        core.keys.text.encode = _one_text_per_pass(core.keys.text)
    model = HostDefense(core)
    model.set_dump_image(dataset.dump_image)
    model.begin(DatasetRun(dataset.dataset_name, "pairs", order.of(dataset)), dataset.prompt_rows)
    messages = [dataset.build_prompt(dataset.data.iloc[i]) for i in range(16)]
    answers = []
    for start in range(0, len(messages), 8):
        answers += model.generate_batch(messages[start : start + 8], dataset=dataset.dataset_name)
    trace = [json.loads(x) for x in next(run_dir.rglob("*_echosafe_trace.jsonl")).read_text().splitlines()]
    decisions = [(t["insight_decision"], t["not_written_code"], [h["id"] for h in t["retrieved"]]) for t in trace]
    similarities = [h["similarity"] for t in trace for h in t["retrieved"]]
    bank = MemoryBank.load(next(p.parent for p in run_dir.rglob("CURRENT")))
    return answers, decisions, similarities, bank.entries()


def test_packed_keys_change_no_output_on_the_demo(tmp_path, monkeypatch, tiny_cache, tiny_qwen2vl_vlm):
    monkeypatch.setenv("LMUData", str(tmp_path / "LMUData"))
    (tmp_path / "LMUData").mkdir()
    from vlmeval_echosafe.vlmevalkit import registry

    registry.register(work_dir=str(tmp_path / "unused"))
    try:
        old = _run(tmp_path, tiny_qwen2vl_vlm, "old", old=True)
        new = _run(tmp_path, tiny_qwen2vl_vlm, "new", old=False)
    finally:
        registry.register()
    assert new[0] == old[0]  # predictions
    assert new[1] == old[1]  # decisions, why not written, retrieved ids in order
    assert any(ids for _, _, ids in new[1])  # later items did retrieve
    np.testing.assert_allclose(new[2], old[2], atol=2e-6)  # similarities: float noise at most
    assert new[3] == old[3]  # bank insights and meta
