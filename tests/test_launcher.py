"""The launcher's exits: every failure path is non-zero (the host alone exits 0), checked in-process."""

import json

import pytest

from vlmeval_echosafe import launcher


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("LMUData", str(tmp_path / "LMUData"))
    (tmp_path / "LMUData").mkdir()
    for var in ("OPENAI_API_KEY", "OPENAI_API_BASE", "LOCAL_LLM", "MMSAFETYBENCHPP_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


def _run(workdir, *args):
    return launcher.main(["--work-dir", str(workdir / "out"), *args])


def test_missing_judge_stops_before_inference(workdir, capsys):
    assert _run(workdir, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL") == 2
    err = capsys.readouterr().err
    assert "--judge rule" in err and "--judge-base-url" in err and "gpt-4o-mini" in err
    assert not (workdir / "out").exists()


def test_api_judge_without_key_or_endpoint(workdir, capsys):
    assert _run(workdir, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL", "--judge", "gpt-5-mini") == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def test_local_llm_replacing_the_judge_stops_before_inference(workdir, capsys, monkeypatch):
    """VLMEvalKit would judge with LOCAL_LLM's model and record the requested name: refused up front."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("LOCAL_LLM", "my-local-judge")
    args = ("--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL")
    assert _run(workdir, *args, "--judge", "gpt-5-mini") == 2
    assert "LOCAL_LLM='my-local-judge'" in capsys.readouterr().err and not (workdir / "out").exists()


def test_llm_judge_options_with_the_rule_judge_stop_before_inference(workdir, capsys):
    args = ("--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL", "--judge", "rule")
    assert _run(workdir, *args, "--judge-args", json.dumps({"judge_image": True})) == 2
    assert "judge_image" in capsys.readouterr().err
    assert _run(workdir, *args, "--judge-args", "{not json") == 2
    assert "--judge-args is not JSON" in capsys.readouterr().err


def test_no_local_release_is_one_clear_error(workdir, capsys):
    assert _run(workdir, "--data", "MMSafetyBenchPP", "--model", "TinyQwen2VL", "--judge", "rule") == 2
    err = capsys.readouterr().err
    assert "MM-SafetyBench++ data not found" in err and "MMSAFETYBENCHPP_ROOT" in err
    assert "Traceback" not in err


def test_unknown_model_suggests_names(workdir, capsys):
    assert _run(workdir, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2-VL", "--judge", "rule") == 2
    assert "TinyQwen2VL" in capsys.readouterr().err


def test_failed_combination_exits_nonzero(workdir, capsys, monkeypatch):
    """A bad row makes the host's combination fail; the host swallows it, the launcher must not."""
    release = workdir / "release"
    release.mkdir()
    (release / "test.jsonl").write_text(
        json.dumps({"category": "Fraud", "mode": "Gen", "label": "safe", "image": "missing.png", "question": "q"})
        + "\n"
    )
    from vlmeval_echosafe.paths import packaged_file

    # An override folder with only the dataset mapping: wrappers/ still come from the package.
    cfg = workdir / "cfg"
    (cfg / "task_configs").mkdir(parents=True)
    text = packaged_file("task_configs/mmsafetybenchpp.yaml").read_text()
    text = text.replace("question: null      #", "question: question  #").replace(
        "question_id: id", "question_id: null"
    )
    text = text.replace("pair_id: null", "pair_id: category")
    (cfg / "task_configs" / "mmsafetybenchpp.yaml").write_text(text)
    monkeypatch.setenv("VLMEVAL_ECHOSAFE_CONFIG", str(cfg))
    monkeypatch.setenv("MMSAFETYBENCHPP_ROOT", str(release))
    from vlmeval_echosafe.datasets.config import load_config

    load_config.cache_clear()
    try:
        code = _run(workdir, "--data", "MMSafetyBenchPP_Gen", "--model", "TinyQwen2VL", "--judge", "rule")
    finally:
        load_config.cache_clear()
    assert code == 1
    err = capsys.readouterr().err
    assert "TinyQwen2VL x MMSafetyBenchPP_Gen" in err and "missing.png" in err and "does not exist" in err


def test_register_is_idempotent():
    import vlmeval.config
    import vlmeval.dataset

    from vlmeval_echosafe import register
    from vlmeval_echosafe.datasets.mmsafetybenchpp import MMSafetyBenchPP

    register()
    classes, names, models = (
        list(vlmeval.dataset.DATASET_CLASSES),
        list(vlmeval.dataset.SUPPORTED_DATASETS),
        dict(vlmeval.config.supported_VLM),
    )
    register()
    assert vlmeval.dataset.DATASET_CLASSES == classes and vlmeval.dataset.SUPPORTED_DATASETS == names
    assert set(vlmeval.config.supported_VLM) == set(models)
    assert (
        vlmeval.dataset.DATASET_CLASSES[0] is MMSafetyBenchPP
        and vlmeval.dataset.DATASET_CLASSES.count(MMSafetyBenchPP) == 1
    )
    assert {"MMSafetyBenchPP", "MMSafetyBenchPP_Gen", "MMSafetyBenchPP_GenOCR", "MMSafetyBenchPP_Demo"} <= set(names)
    assert {"TinyQwen2VL", "Qwen2VL", "Qwen2.5-VL-7B", "LLaVA-1.5-7B", "LLaVA-NeXT-7B"} <= set(models)
    assert vlmeval.dataset.build_dataset("MMSafetyBenchPP_Demo").force_use_dataset_prompt


def test_tls_verification_restored():
    import ssl

    import vlmeval  # noqa: F401  (turns verification off)

    from vlmeval_echosafe.vlmevalkit.patches import restore_tls_verification

    restore_tls_verification()
    assert ssl._create_default_https_context().verify_mode == ssl.CERT_REQUIRED


def test_api_mode_refuses_stateful_defense(workdir, capsys):
    code = _run(
        workdir, "--data", "MMSafetyBenchPP_Demo", "--model", "EchoSafe_TinyQwen2VL", "--judge", "rule", "--api-mode"
    )
    assert code == 2 and "--api-mode" in capsys.readouterr().err


def test_host_checkpoints_are_written_atomically(workdir, monkeypatch):
    """Before the host runs, the launcher has made the `dump` of each of its inference loops atomic."""
    import functools

    import vlmeval.inference
    import vlmeval.inference_api
    import vlmeval.inference_mt
    import vlmeval.inference_video
    import vlmeval.run
    import vlmeval.utils.mp_util

    from vlmeval_echosafe.vlmevalkit import checkpoint

    modules = [
        vlmeval.inference,
        vlmeval.inference_api,
        vlmeval.inference_mt,
        vlmeval.inference_video,
        vlmeval.utils.mp_util,
    ]
    for module in modules:
        monkeypatch.setattr(module, "dump", getattr(module, "_echosafe_host_dump", module.dump))
        monkeypatch.delattr(module, "_echosafe_host_dump", raising=False)
    seen = {}
    monkeypatch.setattr(vlmeval.run, "main", lambda: seen.update({m.__name__: m.dump for m in modules}))
    _run(workdir, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL", "--judge", "rule")
    assert set(seen) == {m.__name__ for m in modules}
    assert all(isinstance(d, functools.partial) and d.func is checkpoint.atomic_dump for d in seen.values())
