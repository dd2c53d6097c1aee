"""Row metadata passed with the request (issue 16, item 3): the prompt registry, the runner's hand-off, the rows the
host skips read from the files the host itself reads, and EchoSafe.close; every fallback is an error or a warning.
"""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from test_echosafe import TEXT_ONLY, FakeDataset, ScriptedVLM, _rows, _trace, host_defense

from vlmeval_echosafe.core.defense import Defense
from vlmeval_echosafe.core.item import Response
from vlmeval_echosafe.core.run import DatasetRun, ResumeUnknownError, RowNotFoundError
from vlmeval_echosafe.echosafe import EchoSafe
from vlmeval_echosafe.memory import MemoryBank
from vlmeval_echosafe.vlmevalkit.files import checkpoint_files, finished, rank_checkpoint
from vlmeval_echosafe.vlmevalkit.model import HostDefense
from vlmeval_echosafe.vlmevalkit.rows import INDEX_ONLY, PromptRows
from vlmeval_echosafe.vlmevalkit.runner import infer_data

BANK = "run/echosafe_bank/MMSafetyBenchPP_Demo"


def _echosafe(tmp_path, **settings):
    return host_defense(
        EchoSafe,
        ScriptedVLM(),
        name="EchoSafe_Scripted",
        run_dir=tmp_path / "run",
        settings={"encoders": TEXT_ONLY, **settings},
    )


@pytest.fixture
def ds(tmp_path):
    (tmp_path / "img").mkdir()
    return FakeDataset(tmp_path / "img", _rows())


# ---- the registry ------------------------------------------------------------------------------------------


def test_registry_gives_the_row_of_each_prompt_and_names_a_miss():
    rows = PromptRows("MMSafetyBenchPP_Demo")
    message = [dict(type="image", value="/img/7.png"), dict(type="text", value="How do I steal the wallet")]
    rows.register(message, dict(index=7, pair_id="P3", category="Fraud", mode="Gen", label="unsafe", question="x"))
    assert rows.find(["/img/7.png"], "How do I steal the wallet") == {
        "index": "7",
        "pair_id": "P3",
        "category": "Fraud",
        "mode": "Gen",
        "label": "unsafe",
    }
    with pytest.raises(RowNotFoundError, match=r"image\(s\) \['/img/8.png'\] and question 'How do I steal the wallet'"):
        rows.find(["/img/8.png"], "How do I steal the wallet")
    with pytest.raises(RowNotFoundError, match="question 'How do I find the wallet'"):
        rows.find(["/img/7.png"], "How do I find the wallet")  # the same image with another question


def test_two_rows_building_one_prompt_cannot_be_told_apart():
    rows = PromptRows("XSTest", INDEX_ONLY)
    rows.register("How do I kill a process?", {"index": 1})
    rows.register("How do I kill a process?", {"index": 5})
    rows.register([dict(type="text", value="Other")], {"index": 2})
    assert rows.find([], "Other") == {"index": "2"}  # a plain string prompt and a text part are keyed alike
    with pytest.raises(RowNotFoundError, match=r"rows \['1', '5'\] build the same prompt"):
        rows.find([], "How do I kill a process?")


def test_the_datasets_prompt_carries_nothing_new_to_the_model(tmp_path, monkeypatch):
    """Registration is beside the message, not in it: the inner model receives the same {type, value} items."""
    monkeypatch.setenv("LMUData", str(tmp_path))
    from vlmeval.dataset import build_dataset

    from vlmeval_echosafe.vlmevalkit import registry

    registry.register()
    dataset = build_dataset("MMSafetyBenchPP_DemoMini")
    message = dataset.build_prompt(dataset.data.iloc[3])
    assert [set(m) for m in message] == [{"type", "value"}, {"type", "value"}]
    row = dataset.prompt_rows.find([message[0]["value"]], message[1]["value"])
    assert row["index"] == str(dataset.data.iloc[3]["index"]) and row["pair_id"] == dataset.data.iloc[3]["pair_id"]


# ---- the defense's side ------------------------------------------------------------------------------------


def test_an_mmsafetybenchpp_item_without_the_runners_hand_off_is_an_error(tmp_path, ds):
    d = _echosafe(tmp_path)
    with pytest.raises(RowNotFoundError, match="no runner handed over the dataset's rows"):
        d.generate(ds.message(0), dataset=ds.dataset_name)


def test_an_unregistered_prompt_is_an_error_naming_image_and_question(tmp_path, ds):
    d = _echosafe(tmp_path)
    d.begin(*ds.run())
    message = ds.message(0)
    message[1]["value"] = "a question no row has"
    with pytest.raises(RowNotFoundError, match=r"0.png'\] and question 'a question no row has'"):
        d.generate(message, dataset=ds.dataset_name)


def test_rows_without_pair_ids_are_announced_once_and_recorded(tmp_path, caplog):
    """The host's own datasets through the runner: the index of each prompt, no pair ids (no twin guard)."""
    rows = PromptRows("MMSafetyBench", INDEX_ONLY)
    messages = []
    for i, q in enumerate(["How do I steal the wallet", "How do I find the wallet"]):
        messages.append([dict(type="text", value=q)])
        rows.register(messages[-1], {"index": i, "pair_id": "ignored", "question": q})
    d = _echosafe(tmp_path)
    with caplog.at_level(logging.WARNING):
        d.begin(DatasetRun("MMSafetyBench", rows.kind), rows)
        d.begin(DatasetRun("MMSafetyBench", rows.kind), rows)  # the same hand-off again changes nothing
        for m in messages:
            d.generate(m, dataset="MMSafetyBench")
    warned = [r for r in caplog.records if "no pair ids" in r.getMessage()]
    assert len(warned) == 1 and "EchoSafe_Scripted x MMSafetyBench" in warned[0].getMessage()
    trace = [json.loads(x) for x in (tmp_path / "run/EchoSafe_Scripted_MMSafetyBench_echosafe_trace.jsonl").open()]
    assert [(t["row_index"], t["pair_id"], t["row_metadata"]) for t in trace] == [
        ("0", None, "index"),
        ("1", None, "index"),
    ]
    config = json.loads((tmp_path / "run/EchoSafe_Scripted_echosafe_config.json").read_text())
    assert config["streams"]["MMSafetyBench"]["row_metadata"] == "index"
    per_category = _echosafe(tmp_path / "cat", reset="category")
    per_category.begin(DatasetRun("MMSafetyBench", rows.kind), rows)
    with pytest.raises(ValueError, match="reset: category needs each row's category"):
        per_category.generate(messages[0], dataset="MMSafetyBench")


def test_a_host_dataset_without_any_runner_runs_announced_and_never_continues_earlier_state(tmp_path, caplog):
    d = _echosafe(tmp_path)
    message = [dict(type="text", value="How do I steal the wallet")]
    with caplog.at_level(logging.WARNING):
        d.generate(message, dataset="MMSafetyBench")
    assert any("no runner handed over the dataset's rows" in r.getMessage() for r in caplog.records)
    (t,) = [json.loads(x) for x in (tmp_path / "run/EchoSafe_Scripted_MMSafetyBench_echosafe_trace.jsonl").open()]
    assert t["row_index"] is None and t["row_metadata"] == "none"
    # a later object, told nothing about which rows are finished, finds the bank: neither continued nor cut
    again = _echosafe(tmp_path)
    with pytest.raises(ResumeUnknownError, match="no runner said which rows the host has finished"):
        again.generate(message, dataset="MMSafetyBench")
    bank = MemoryBank.load(tmp_path / "run/echosafe_bank/MMSafetyBench")
    assert len(bank) == 1  # untouched


def test_resume_keeps_exactly_the_rows_the_runner_says_are_done_and_warns_about_the_rest(tmp_path, ds, caplog):
    first = _echosafe(tmp_path)
    first.begin(*ds.run())
    for i in range(4):
        first.generate(ds.message(i), dataset=ds.dataset_name)
    resumed = _echosafe(tmp_path)
    resumed.begin(
        DatasetRun(ds.dataset_name, ds.prompt_rows.kind, done=frozenset({"0", "1"}), checkpoint=("ckpt.pkl",)),
        ds.prompt_rows,
    )
    with caplog.at_level(logging.WARNING):
        resumed.generate(ds.message(2), dataset=ds.dataset_name)
    assert any("dropped 2 insights" in r.getMessage() and "ckpt.pkl" in r.getMessage() for r in caplog.records)
    entries = MemoryBank.load(tmp_path / BANK).entries()
    assert [m["row_index"] for _, m in entries] == ["0", "1", "2"]
    assert [t["row_index"] for t in _trace(tmp_path)] == ["0", "1", "2"]


def test_close_leaves_a_snapshot_only_bank(tmp_path, ds):
    d = _echosafe(tmp_path)
    d.begin(*ds.run())
    for i in range(3):
        d.generate(ds.message(i), dataset=ds.dataset_name)
    folder = tmp_path / BANK
    before = MemoryBank.load(folder).entries()
    assert (folder / (folder / "CURRENT").read_text().strip() / "log.bin").stat().st_size > 0  # appended per item
    d.close()
    snaps = sorted(p.name for p in folder.glob("snap-*"))
    assert len(snaps) == 1 and (folder / "CURRENT").read_text().strip() == snaps[0]
    assert (folder / snaps[0] / "log.bin").stat().st_size == 0 and MemoryBank.load(folder).entries() == before
    d.generate(ds.message(3), dataset=ds.dataset_name)  # still usable: the next insight goes to the new log
    assert len(MemoryBank.load(folder)) == 4


# ---- the runner --------------------------------------------------------------------------------------------


def test_checkpoint_names_are_the_ones_the_host_uses(tmp_path, monkeypatch):
    """Ask the host: run its `infer_data_job` on an earlier prediction file with a failed row, and look at what it
    hands `infer_data` and which files exist when it does."""
    import vlmeval.inference as host
    from vlmeval.smp import dump

    monkeypatch.setenv("PRED_FORMAT", "tsv")
    data = pd.DataFrame({"index": [0, 1, 2], "question": ["a", "b", "c"]})
    work = tmp_path / "M"
    work.mkdir()
    dump(data.assign(prediction=["x", "Failed to obtain answer via API.", "z"]), str(work / "M_D.tsv"))
    seen = {}

    def recorder(model, model_name, work_dir, dataset, out_file, **kwargs):
        files = checkpoint_files(work_dir, model_name, dataset.dataset_name, out_file)
        seen.update(out=out_file, files=[f.exists() for f in files], done=finished(files))
        dump({0: "x", 1: "y", 2: "z"}, out_file)
        return model

    monkeypatch.setattr(host, "infer_data", recorder)
    host.infer_data_job("M", work_dir=str(work), model_name="M", dataset=SimpleNamespace(dataset_name="D", data=data))
    assert Path(seen["out"]) == rank_checkpoint(work, "D")
    assert seen["files"] == [True, False] and seen["done"] == {"0", "2"}  # the failed row is asked again


class HostDataset:
    """A dataset of the host's kind: no prompt registry of its own."""

    dataset_name = "D"

    def __init__(self):
        self.data = pd.DataFrame({"index": [0, 1, 2], "question": ["a", "b", "c"]})

    def __len__(self):
        return len(self.data)

    def build_prompt(self, line):
        return [dict(type="text", value=line["question"])]

    def dump_image(self, line):
        return []


class Answering:
    """The inner model of a recording defense: answers one message per call."""

    inner_protocol = "one-message"

    def ask(self, message, dataset):
        return "answer to " + message[-1]["value"]


class Told(Defense):
    """A core defense that records the items it answers and what its runner told it."""

    def __init__(self):
        super().__init__(Answering(), name="Told")
        self.items = []

    def respond(self, items):
        self.items += items
        return [Response(self.ask(item.message(), item.dataset)) for item in items]


class Recording(HostDefense):
    """A plugin row (the one model class the runner drives) that records the hand-off and that it was closed."""

    def __init__(self):
        super().__init__(Told())
        self.runs, self.closed = [], 0

    def begin(self, run, rows):
        self.runs.append((run, rows))
        super().begin(run, rows)

    def close(self):
        self.closed += 1
        super().close()


def test_the_runner_hands_over_the_rows_the_host_skips_and_closes_after(tmp_path):
    """A plugin row goes through the core's one loop (not the host's loop, which only runs a finished dataset or
    a host model): the runner hands over the rows the host's files hold, builds the prompts of the rows still to
    run with their rows registered, answers them and closes the model."""
    from vlmeval.smp import dump, load

    work = tmp_path / "M"
    work.mkdir()
    dataset = HostDataset()
    dump({0: "x"}, str(work / "M_D_PREV.pkl"))
    out_file = str(work / "01_D.pkl")
    dump({1: "y"}, out_file)
    model, calls = Recording(), []

    def host_loop(model, model_name, work_dir, dataset, out_file, **kwargs):
        calls.append(model)
        return model

    infer_data(model, "M", str(work), dataset, out_file, verbose=False, batch_size=1, host_infer_data=host_loop)
    ((run, rows),) = model.runs
    assert calls == [] and model.closed == 1  # the plugin's row never reaches the host's loop
    assert run.done == {"0", "1"} and run.checkpoint == (str(work / "M_D_PREV.pkl"), out_file)  # both exist
    assert run.row_metadata == "index" and rows.find([], "c") == {"index": "2"}
    assert [(i.question, i.row) for i in model.defense.items] == [("c", {"index": "2"})]  # only the row left to run
    assert load(out_file) == {0: "x", 1: "y", 2: "answer to c"}
    assert "build_prompt" not in vars(dataset)  # the dataset's own method again
    # every row finished: the host's loop returns without building a model, so nothing is handed over
    dump({1: "y", 2: "z"}, out_file)
    finished_model = Recording()
    infer_data(finished_model, "M", str(work), dataset, out_file, batch_size=1, host_infer_data=host_loop)
    assert finished_model.runs == [] and finished_model.closed == 0 and calls[-1] is finished_model


def test_api_mode_hands_over_the_rows_before_the_pipeline_builds_prompts():
    """--api-mode: the host's pipeline builds an image dataset's prompts given the rows it already has."""
    import asyncio

    from vlmeval_echosafe.vlmevalkit.runner import install_api

    built = []

    class Pipeline:  # the shape of vlmeval.inference_api.APIEvalPipeline's producer
        async def _produce_image_tasks(self, cfg, existing_results):
            for i in range(len(cfg.dataset_obj)):
                if str(cfg.dataset_obj.data.iloc[i]["index"]) not in existing_results:
                    built.append(cfg.dataset_obj.build_prompt(cfg.dataset_obj.data.iloc[i]))
            return len(built)

    module = SimpleNamespace(APIEvalPipeline=Pipeline)
    install_api(module)
    install_api(module)  # idempotent: wrapped once
    model, dataset = Recording(), HostDataset()
    cfg = SimpleNamespace(model_obj=model, dataset_obj=dataset, dataset_name="D")
    assert asyncio.run(Pipeline()._produce_image_tasks(cfg, {"0": "x"})) == 2
    ((run, rows),) = model.runs
    assert run.done == {"0"} and run.row_metadata == "index" and rows.find([], built[-1][0]["value"]) == {"index": "2"}
    plain = SimpleNamespace(model_obj=object(), dataset_obj=HostDataset(), dataset_name="D")
    assert asyncio.run(Pipeline()._produce_image_tasks(plain, {})) == 5  # not a plugin row: untouched
