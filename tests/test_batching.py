"""Batched decoding and micro-batched EchoSafe: rows decoded together give exactly what each row gives on its own,
B = 1 through the plugin's runner (the core's one loop) equals the host's per-sample loop, and B > 1 keeps the
host's files and resume."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAMILIES
from PIL import Image
from test_sessions import vision_tower

from vlmeval_echosafe.core.inner import adapt
from vlmeval_echosafe.launcher import LaunchError, PluginFlags, pop_plugin_flags
from vlmeval_echosafe.vlmevalkit import runner

QUESTIONS = [
    "What is this?",
    "Describe the picture in detail please, every part of it.",
    "How?",
    "Tell me a story about the object shown here.",
]
SIZES = [(64, 64), (96, 64), (64, 128), (80, 80)]  # different image sizes: different numbers of vision tokens


@pytest.fixture(scope="module")
def conversations(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-images")
    convs = []
    for i, ((w, h), q) in enumerate(zip(SIZES, QUESTIONS, strict=True)):
        path = root / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        convs.append(
            [{"role": "user", "content": [{"type": "image", "value": str(path)}, {"type": "text", "value": q}]}]
        )
    return convs


def _reflect_script(vlm, session, rows, jump_forward=True):
    """The shape of EchoSafe's reflection: a free continuation, then one grammar-constrained form."""
    from vlmeval_echosafe.defenses.echosafe_prompts import form_budget, form_grammar
    from vlmeval_echosafe.models.constrained import Constraint

    asks = [vlm.next_turn_text(session, "Reflect.", r) + "Note:" for r in range(rows)]
    first = vlm.extend_batch(session, asks, max_new_tokens=8)
    asks = ["\n" for _ in range(rows)]
    form = Constraint(form_grammar(), line_tokens=4, max_new_tokens=form_budget(4))
    form = vlm.extend_batch(session, asks, max_new_tokens=None, stop=None, constraint=form, jump_forward=jump_forward)
    return list(zip(first, form, strict=True))


@pytest.mark.parametrize("kind", FAMILIES)
def test_batched_rows_equal_one_row_sessions(tiny_vlms, kind, conversations):
    vlm = tiny_vlms(kind)
    alone = []  # each row on its own, its form decoded one token per forward pass
    for conv in conversations:
        answer, session = vlm.start(conv)
        alone.append((answer, *_reflect_script(vlm, session, 1, jump_forward=False)[0], session.real_ids(0)))
    answers, session = vlm.start_batch(conversations)
    assert session.mask[:, 0].tolist().count(0) >= 1  # the rows really were left-padded
    together = [(a, *r) for a, r in zip(answers, _reflect_script(vlm, session, len(conversations)), strict=True)]
    for row, (one, many) in enumerate(zip(alone, together, strict=True)):
        assert one[:-1] == many
        # the real tokens of each row (prompt, answer, reflection) are the one-row session's ids, in order
        assert torch.equal(session.real_ids(row), one[-1])
    messages = [c[0]["content"] for c in conversations]
    inner = adapt(vlm)  # the protocol a defense calls: a batch of requests, and one request per call
    assert inner.answer(messages, None, keep=False).answers == [inner.ask(m, None) for m in messages]


@pytest.mark.parametrize("kind", FAMILIES)
def test_answers_and_follow_ups_in_one_batch_equal_separate_calls(tiny_vlms, kind, conversations):
    """EchoSafe's `staleness: 1` step: one batch's answers decoded together with an earlier batch's constrained
    follow-ups give every row the tokens of the separate calls, and the new session continues as a separate one."""
    from vlmeval_echosafe.defenses.echosafe_prompts import REFLECT_TEMPLATE, form_budget, form_grammar
    from vlmeval_echosafe.models.constrained import Constraint

    vlm = tiny_vlms(kind)
    form = Constraint(form_grammar(), line_tokens=4, max_new_tokens=form_budget(4))
    earlier, later = conversations[:2], conversations[2:]
    _, old = vlm.start_batch(earlier)
    texts = [vlm.next_turn_text(old, REFLECT_TEMPLATE, row) for row in range(2)]
    alone_follow_ups = vlm.extend_batch(old, texts, max_new_tokens=None, stop=None, constraint=form)
    alone_answers, alone = vlm.start_batch(later)
    _, old = vlm.start_batch(earlier)
    answers, session, follow_ups = vlm.start_and_extend(later, old, texts, form)
    assert answers == alone_answers and follow_ups == alone_follow_ups
    assert all(torch.equal(session.real_ids(row), alone.real_ids(row)) for row in range(2))
    asks = [vlm.next_turn_text(alone, "Reflect.", row) for row in range(2)]
    assert vlm.extend_batch(session, asks, max_new_tokens=4) == vlm.extend_batch(alone, asks, max_new_tokens=4)


def test_forced_answer_length_holds_in_a_mixed_batch(tiny_qwen2vl_vlm, conversations):
    """`min_new_tokens` (the benches' forced answer length) applies to the answer rows of a mixed batch only: the
    answers run to their length, the follow-ups still end with their form."""
    from vlmeval_echosafe.defenses.echosafe_prompts import REFLECT_TEMPLATE, form_budget, form_grammar
    from vlmeval_echosafe.defenses.insight import parse_reflection
    from vlmeval_echosafe.models.constrained import Constraint

    vlm = tiny_qwen2vl_vlm
    form = Constraint(form_grammar(), line_tokens=4, max_new_tokens=form_budget(4))
    vlm.min_new_tokens = vlm.max_new_tokens
    try:
        _, old = vlm.start_batch(conversations[:2])
        texts = [vlm.next_turn_text(old, REFLECT_TEMPLATE, row) for row in range(2)]
        _, session, follow_ups = vlm.start_and_extend(conversations[2:], old, texts, form)
        _, alone = vlm.start_batch(conversations[2:])
    finally:
        vlm.min_new_tokens = 0
    for row, conv in enumerate(conversations[2:]):
        prompt = int(vlm.prepare_inputs(conv[0:1])["attention_mask"].sum())
        assert session.real_ids(row).shape[1] == prompt + vlm.max_new_tokens
        assert torch.equal(session.real_ids(row), alone.real_ids(row))
    assert all(parse_reflection(f)["decision"] in ("safe", "unsafe") for f in follow_ups)


def test_session_argument_checks(tiny_llava_vlm, conversations):
    _, session = tiny_llava_vlm.start_batch(conversations[:2], max_new_tokens=2)
    with pytest.raises(ValueError, match="3 texts for a session of 2 rows"):
        tiny_llava_vlm.extend_batch(session, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"rows \[1\] have no new tokens"):
        tiny_llava_vlm.extend_batch(session, ["a", ""])
    with pytest.raises(ValueError, match="one-row sessions"):
        session.reply  # noqa: B018


# ---- the runner ------------------------------------------------------------------------------------------


@pytest.fixture
def demo_mini(tmp_path, monkeypatch, tiny_cache):
    monkeypatch.setenv("LMUData", str(tmp_path / "LMUData"))
    monkeypatch.setenv("PRED_FORMAT", "tsv")
    (tmp_path / "LMUData").mkdir()
    from vlmeval.dataset import build_dataset

    from vlmeval_echosafe.vlmevalkit import registry

    registry.register(work_dir=str(tmp_path / "unused"))
    try:
        yield lambda: build_dataset("MMSafetyBenchPP_DemoMini")  # a fresh one per run: the host's job edits it
    finally:
        registry.register()


def _host_loop(original):
    """The host's own per-sample loop (`generate` per row) on a plugin row, given the hand-off the plugin's runner
    gives (the rows the host's files hold, the registry of the dataset's prompts), and closed after."""
    from vlmeval_echosafe.core.run import DatasetRun
    from vlmeval_echosafe.datasets import order
    from vlmeval_echosafe.vlmevalkit.files import done_rows

    def loop(model, model_name, work_dir, dataset, out_file, **kwargs):
        files, done = done_rows(work_dir, model_name, dataset.dataset_name, out_file, False)
        with runner.registered_prompts(dataset) as rows:
            read = tuple(str(f) for f in files if f.exists())
            model.begin(DatasetRun(dataset.dataset_name, rows.kind, order.of(dataset), done, read), rows)
            out = original(model, model_name, work_dir, dataset, out_file, **kwargs)
        model.close()
        return out

    return loop


def _run(
    make_dataset,
    inner,
    work: Path,
    batch_size: int | None,
    fail_on_batch: int | None = None,
    limit: int | None = None,
    **settings,
):
    """EchoSafe on ``inner`` through the host's `infer_data_job` (its first ``limit`` rows), with the host's loop
    (None) or the plugin's runner at ``batch_size``; ``settings`` on top of a 6-token reflection line."""
    import vlmeval.inference as host

    from vlmeval_echosafe.echosafe import EchoSafe
    from vlmeval_echosafe.vlmevalkit.model import HostDefense

    name = "EchoSafe_TinyB"
    model = HostDefense(EchoSafe(inner, name=name, run_dir=work, settings={"reflect_tokens": 6, **settings}))
    original = getattr(host, "_echosafe_host_infer_data", host.infer_data)
    if fail_on_batch is not None:
        calls = []
        real = model.defense.respond

        def failing(items):
            calls.append(1)
            if len(calls) == fail_on_batch:
                raise KeyboardInterrupt("simulated crash")
            return real(items)

        model.defense.respond = failing
    patched = (
        _host_loop(original)
        if batch_size is None
        else functools.partial(runner.infer_data, batch_size=batch_size, host_infer_data=original)
    )  # as the launcher installs it
    old = host.infer_data
    host.infer_data = patched
    try:
        host.infer_data_job(model, work_dir=str(work), model_name=name, dataset=make_dataset(), limit=limit)
    finally:
        host.infer_data = old
    return name


def _outputs(work: Path, name: str):
    from vlmeval.smp import load

    pred = load(str(work / f"{name}_MMSafetyBenchPP_DemoMini.tsv"))
    trace = [json.loads(x) for x in (work / f"{name}_MMSafetyBenchPP_DemoMini_echosafe_trace.jsonl").open()]
    for t in trace:
        t.pop("timings")
    from vlmeval_echosafe.memory import MemoryBank

    bank = MemoryBank.load(work / "echosafe_bank" / "MMSafetyBenchPP_DemoMini")
    entries = bank.entries()
    return dict(zip(pred["index"], pred["prediction"], strict=True)), trace, entries, bank


@pytest.mark.parametrize("kind", FAMILIES)
def test_batch_size_one_equals_the_host_loop(demo_mini, tiny_vlms, kind, tmp_path):
    """Same predictions, trace and bank; the other families on the first two pairs (CI time)."""
    vlm = tiny_vlms(kind)
    limit = None if kind == "qwen2vl" else 4
    name = _run(demo_mini, vlm, tmp_path / "host", None, limit=limit)
    _run(demo_mini, vlm, tmp_path / "b1", 1, limit=limit, staleness=0)  # the exact algorithm, named
    host, ours = _outputs(tmp_path / "host", name), _outputs(tmp_path / "b1", name)
    assert len(host[0]) == (limit or 12) and len(host[2]) >= 1  # the later items retrieved from a bank
    assert host[:3] == ours[:3]


def test_micro_batches_read_the_bank_as_it_stood(demo_mini, tiny_qwen2vl_vlm, tmp_path):
    name = _run(demo_mini, tiny_qwen2vl_vlm, tmp_path / "b4", 4)
    preds, trace, entries, _ = _outputs(tmp_path / "b4", name)
    assert len(preds) == 12 and [t["stream_pos"] for t in trace] == list(range(12))
    assert [t["row_index"] for t in trace] == [str(i) for i in demo_mini().data["index"]]
    written_before = np.cumsum([0] + [t["insight_id"] is not None for t in trace])
    for pos, t in enumerate(trace):
        assert t["batch"] == {"size": 4, "position": pos % 4}
        assert t["bank_size"] == written_before[pos - pos % 4]  # the bank as it stood at the batch's start
        assert all(hit["id"] < t["bank_size"] for hit in t["retrieved"])
    assert [m["stream_pos"] for _, m in entries] == [t["stream_pos"] for t in trace if t["insight_id"] is not None]


def test_batched_run_resumes_from_the_hosts_checkpoint(demo_mini, tiny_qwen2vl_vlm, tmp_path):
    work = tmp_path / "crash"
    with pytest.raises(KeyboardInterrupt):
        _run(demo_mini, tiny_qwen2vl_vlm, work, 4, fail_on_batch=2)
    from vlmeval.smp import load

    checkpoint = load(str(work / "01_MMSafetyBenchPP_DemoMini.pkl"))
    assert len(checkpoint) == 4  # the first batch, written as soon as it finished
    name = _run(demo_mini, tiny_qwen2vl_vlm, work, 4)
    preds, trace, entries, _ = _outputs(work, name)
    assert all(preds[k] == v for k, v in checkpoint.items())
    assert [t["stream_pos"] for t in trace] == list(range(12))
    rows = [m["row_index"] for _, m in entries]
    assert len(rows) == len(set(rows))  # nothing the crash left behind was written twice


def _written_before(trace):
    return np.cumsum([0] + [t["insight_id"] is not None for t in trace])


def test_staleness_one_lags_the_bank_one_micro_batch(demo_mini, tiny_qwen2vl_vlm, tmp_path):
    """Each batch retrieves from the bank as it stood before the batch before it; the reflections of the first
    batch (decoded with the second batch's answers) are the ones staleness 0 stores; the runner's flush stores the
    last batch's; everything is recorded."""
    name = _run(demo_mini, tiny_qwen2vl_vlm, tmp_path / "s1", 4, staleness=1)
    _run(demo_mini, tiny_qwen2vl_vlm, tmp_path / "s0", 4, staleness=0)
    preds, trace, entries, _ = _outputs(tmp_path / "s1", name)
    exact_preds, exact_trace, exact_entries, _ = _outputs(tmp_path / "s0", name)
    assert len(preds) == 12 and [t["stream_pos"] for t in trace] == list(range(12))
    assert all(t["staleness"] == 1 for t in trace) and all(t["staleness"] == 0 for t in exact_trace)
    written = _written_before(trace)
    for pos, t in enumerate(trace):
        start = pos - pos % 4
        assert t["bank_size"] == (written[start - 4] if start >= 4 else 0)  # lags one micro-batch
        assert all(hit["id"] < t["bank_size"] for hit in t["retrieved"])
    # batch 1 saw an empty bank either way: same answers, same reflections, same insights
    first = [str(i) for i in demo_mini().data["index"][:4]]
    assert [preds[int(i)] for i in first] == [exact_preds[int(i)] for i in first]
    assert [t["insight_decision"] for t in trace[:4]] == [t["insight_decision"] for t in exact_trace[:4]]
    ours = [e for e in entries if e[1]["row_index"] in first]
    assert ours == [e for e in exact_entries if e[1]["row_index"] in first]
    assert all(t["insight_decision"] in ("safe", "unsafe") for t in trace[-4:])  # the flush reflected the last batch
    config = json.loads((tmp_path / "s1" / f"{name}_echosafe_config.json").read_text())
    assert config["settings"]["staleness"] == 1


def test_staleness_one_at_batch_size_one_completes_through_the_runner(demo_mini, tiny_qwen2vl_vlm, tmp_path):
    """Changed by design (core redesign): staleness 1 is no longer refused at batch size 1: the plugin's runner
    drives every plugin row through the core's one loop, which flushes at the dataset's end, so each item's
    reflection decodes with the next item's answer and the last one is reflected on and stored by the flush."""
    name = _run(demo_mini, tiny_qwen2vl_vlm, tmp_path / "s1b1", 1, limit=4, staleness=1)
    preds, trace, entries, _ = _outputs(tmp_path / "s1b1", name)
    assert len(preds) == 4 and [t["stream_pos"] for t in trace] == list(range(4))
    assert all(t["staleness"] == 1 and t["batch"] == {"size": 1, "position": 0} for t in trace)
    assert all(t["insight_decision"] in ("safe", "unsafe") for t in trace)  # every item reflected on, the last too
    written = _written_before(trace)
    assert [t["bank_size"] for t in trace] == [0, 0, *(int(written[pos - 1]) for pos in range(2, 4))]  # lags one item
    assert [m["row_index"] for _, m in entries] == [t["row_index"] for t in trace if t["insight_id"] is not None]


def test_staleness_one_resume_records_the_reflections_lost_in_the_stop(demo_mini, tiny_qwen2vl_vlm, tmp_path):
    """A run that dies while a batch's reflections are pending: on resume those finished rows get a trace line
    that says so (no insight), and the stream goes on from there."""
    work = tmp_path / "crash"
    with pytest.raises(KeyboardInterrupt):
        _run(demo_mini, tiny_qwen2vl_vlm, work, 4, fail_on_batch=2, staleness=1)
    name = _run(demo_mini, tiny_qwen2vl_vlm, work, 4, staleness=1)
    preds, trace, entries, _ = _outputs(work, name)
    assert len(preds) == 12 and [t["stream_pos"] for t in trace] == list(range(12))
    assert [t["not_written_code"] for t in trace[:4]] == ["lost"] * 4
    assert all(t["insight_id"] is None for t in trace[:4])
    first = {t["row_index"] for t in trace[:4]}
    assert not first & {m["row_index"] for _, m in entries} and len(entries) >= 1


def test_models_without_batching_go_to_the_host_loop(monkeypatch):
    calls = []

    class OneAtATime:
        is_api = False

    class Data:
        dataset_name = "D"

        def __init__(self):
            import pandas as pd

            self.data = pd.DataFrame({"index": [1, 2]})

        def __len__(self):
            return 2

    def host(model, model_name, work_dir, dataset, out_file, **kw):
        calls.append(model)
        return model

    model = OneAtATime()
    runner.infer_data(model, "M", "/nonexistent", Data(), "/nonexistent/x.pkl", batch_size=8, host_infer_data=host)
    assert calls == [model]


@pytest.mark.parametrize(
    ("argv", "flags", "rest"),
    [
        (["--data", "D", "--batch-size", "8", "--model", "M"], PluginFlags(8), ["--data", "D", "--model", "M"]),
        (["--batch-size=4"], PluginFlags(4), []),
        (["--data", "D"], PluginFlags(), ["--data", "D"]),
        (["--order", "shuffle", "--data", "D", "--order-seed=3"], PluginFlags(1, "shuffle", 3), ["--data", "D"]),
    ],
)
def test_pop_plugin_flags(argv, flags, rest):
    assert pop_plugin_flags(argv) == (flags, rest)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "x"], "--batch-size"),
        (["--batch-size"], "--batch-size"),
        (["--batch-size=-2"], "--batch-size"),
        (["--order", "shuffle"], "--order"),
        (["--order", "random", "--order-seed", "1"], "--order"),
        (["--order-seed", "-1"], "--order-seed"),
    ],
)
def test_bad_plugin_flags_are_refused(argv, flag):
    with pytest.raises(LaunchError, match=flag):
        pop_plugin_flags(argv)


@pytest.mark.parametrize("kind", FAMILIES)
def test_image_features_are_handed_from_key_to_answer(tiny_vlms, kind, conversations):
    """Features computed for the memory key replace the answer's vision pass and give the same tokens, with the
    answer batch holding the images in another order than the key batch."""
    vlm = tiny_vlms(kind)
    vlm._features.clear()  # the model is shared: earlier tests may have left keys' features behind
    reference = vlm.generate_batch_turns(conversations)
    paths = [conv[0]["content"][0]["value"] for conv in conversations]
    one_by_one = [vlm.image_features([p])[0] for p in paths]
    vlm._features.clear()
    calls = []
    hook = vision_tower(vlm).register_forward_hook(lambda *a: calls.append(1))
    try:
        together = vlm.image_features(paths[::-1])[::-1]
        assert len(calls) == 1 and len(vlm._features) == len(conversations)  # one vision pass for all four
        for alone, batched in zip(one_by_one, together, strict=True):  # each image's own slice of the batch
            assert batched.shape == alone.shape and torch.allclose(batched, alone, atol=1e-5)
        assert vlm.generate_batch_turns(conversations) == reference
        assert len(calls) == 1 and not vlm._features  # no second vision pass; handoff used up
    finally:
        hook.remove()
