"""`python run.py …` / `vlmeval-echosafe …`: VLMEvalKit's own runner with the plugin registered.

It accepts exactly the host's ``run.py`` flags and adds what the host lacks: an explicit judge check before
inference, TLS verification restored, checkpoints written atomically (every host patch is in
:mod:`.vlmevalkit.patches`), each dataset's rows and
finished rows handed to the model (:mod:`.vlmevalkit.runner`), and a non-zero exit when any model × dataset combination
failed (the host's ``run_local_mode`` logs the exception and exits 0). Two host
flags are taken over: ``--base-url`` (the inner model of every ``--model`` is served there, and the plugin's
wrappers stay around it) and torchrun's process group (started with the machine's backend; the host hard-codes
NCCL).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .console import HostConsole, print_run_summary
from .redact import collect_secrets, install_log_masking
from .vlmevalkit.patches import (
    HOST_ENV_DEFAULTS,
    OutcomeTracker,
    import_host,
    mask_recorded_argv,
    record_data_sources,
    restore_tls_verification,
)
from .vlmevalkit.torchrun import init_process_group, rank

# The host's own safety benchmarks: without a real judge their evaluate falls back to string rules
# (MMSafetyBench counts an answer with neither "safe" nor "unsafe" in it as safe).
HOST_SAFETY_DATASETS = ("MMSafetyBench", "MSSBench", "SIUO", "SIUO_GEN", "XSTest")


class LaunchError(RuntimeError):
    """A problem found before the host starts (bad flag, missing judge); printed without a traceback."""


# Flags the plugin adds to the host's; taken out of argv before the host's parser sees it.
PLUGIN_FLAGS_HELP = """
vlmeval-echosafe adds:
  --batch-size N         decode N samples at a time where the model can (the plugin's transformers backend, and
                         EchoSafe on it: N items retrieve from the memory as it stood, then answer and reflect as
                         one batch). Other models run one at a time as usual. Default 1: the host's own loop.
  --order file|shuffle   the order MM-SafetyBench++ items reach the model in (default: the file's). It matters for
                         EchoSafe, whose memory makes items depend on earlier ones; it is recorded in EchoSafe's
                         config and part of its resume check. Use a separate --work-dir per order.
  --order-seed N         the seed of --order shuffle (required with it).

With --base-url URL (the host's flag), every --model name's inner model is the one URL serves under that name:
EchoSafe_X, SafetyPrompt_X, Base_X and X all wrap model X of the endpoint (key: --key, else LMDEPLOY_API_KEY or
OPENAI_API_KEY). --max-tokens, --temperature, --top-p, --top-k, --repetition-penalty, --extra-body, --timeout and
--retry apply to its calls; without --max-tokens a call may write 1024 tokens, without --temperature it is greedy.
"""


@dataclass(frozen=True)
class PluginFlags:
    batch_size: int = 1
    order: str = "file"
    order_seed: int | None = None


def _whole(flag: str, value: str, minimum: int) -> int:
    if not value.lstrip("-").isdigit() or int(value) < minimum:
        raise LaunchError(f"{flag} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def pop_plugin_flags(words: list[str]) -> tuple[PluginFlags, list[str]]:
    """(the plugin's flags, argv without them); the host's parser would reject them."""
    parsers = {
        "--batch-size": lambda v: _whole("--batch-size", v, 1),
        "--order-seed": lambda v: _whole("--order-seed", v, 0),
        "--order": lambda v: v,
    }
    found: dict[str, object] = {}
    rest, i = [], 0
    while i < len(words):
        word = words[i]
        flag = word.split("=", 1)[0]
        if flag not in parsers:
            rest.append(word)
            i += 1
            continue
        if "=" in word:
            value = word.split("=", 1)[1]
        elif i + 1 < len(words):
            value, i = words[i + 1], i + 1
        else:
            raise LaunchError(f"{flag} needs a value, e.g. {flag} {'shuffle' if flag == '--order' else 8}")
        found[flag.lstrip("-").replace("-", "_")] = parsers[flag](value)
        i += 1
    from .datasets.order import StreamOrder

    flags = PluginFlags(**found)  # type: ignore[arg-type]
    try:
        StreamOrder(flags.order, flags.order_seed)
    except ValueError as err:
        raise LaunchError(f"--order {flags.order} --order-seed {flags.order_seed}: {err}") from err
    return flags, rest


def _set_order_env(flags: PluginFlags) -> None:
    """The stream order reaches the dataset (built by the host) the way lmms-eval users set it: two variables."""
    from .datasets.order import ORDER_ENV, SEED_ENV

    os.environ[ORDER_ENV] = flags.order
    if flags.order_seed is None:
        os.environ.pop(SEED_ENV, None)
    else:
        os.environ[SEED_ENV] = str(flags.order_seed)


def _given(words: list[str], flag: str) -> bool:
    return any(w == flag or w.startswith(flag + "=") for w in words)


def take_over_base_url(args: Any, models: list[str], words: list[str]) -> tuple[dict[str, dict], list[str]]:
    """(served inner models to register, argv without ``--base-url``).

    Given ``--base-url``, the host builds ``LMDeployAPI(model=<the whole --model name>)`` for every model, so
    ``EchoSafe_X`` would ask the endpoint for a model called "EchoSafe_X" and no wrapper would run. Instead the
    inner model of each name is registered as the endpoint's model (`models/served.py`) and the flag is taken out
    of the host's argv."""
    if not args.base_url:
        return {}, words
    if args.config:
        raise LaunchError(
            "--base-url with --config: declare the served model in the config or in wrappers/models.yaml "
            "({class: ServedVLM, base_url: ..., model: ...}) instead"
        )
    if not _given(words, "--base-url"):
        raise LaunchError("spell --base-url in full (the launcher takes it over from the host)")
    from .catalog import inner_name

    extra: dict[str, Any] = {}
    for name in ("top_k", "repetition_penalty"):  # not OpenAI fields: vLLM and SGLang read them from the body
        if getattr(args, name) is not None:
            extra[name] = getattr(args, name)
    if args.extra_body:
        try:
            body = json.loads(args.extra_body)
        except json.JSONDecodeError as err:
            raise LaunchError(f"--extra-body is not JSON: {err}") from err
        if not isinstance(body, dict):
            raise LaunchError("--extra-body must be a JSON object")
        extra.update(body)
    spec: dict[str, Any] = {
        "base_url": args.base_url,
        "key": args.key if _given(words, "--key") else None,
        "timeout": args.timeout,
        "retry": args.retry,
        "extra_body": extra or None,
    }
    if _given(words, "--max-tokens"):  # the host's default (32768) exceeds many servers' context length
        spec["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        spec["temperature"] = args.temperature
    if args.top_p is not None:
        spec["top_p"] = args.top_p
    served = {inner_name(m): {"model": inner_name(m), **spec} for m in models}
    rest, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word == "--base-url":
            skip = True
        elif not word.startswith("--base-url="):
            rest.append(word)
    return served, rest


def _requested(args: Any) -> tuple[list[str], list[str]]:
    if args.config:
        cfg = json.loads(Path(args.config).read_text(encoding="utf-8"))
        return list(cfg.get("model", {})), list(cfg.get("data", {}))
    return list(args.model or []), list(args.data or [])


def preflight(args: Any, models: list[str], datasets: list[str], batch_size: int = 1) -> None:
    """Checks that would otherwise fail only after model loading, or never (a silently chosen judge)."""
    import difflib

    from vlmeval.config import supported_VLM

    from .datasets.config import load_config, variant
    from .datasets.mmsafetybenchpp import MMSafetyBenchPP
    from .datasets.release import locate_release
    from .judges import check_judge_choice

    if not models or not datasets:
        raise LaunchError("give --data and --model (or --config); see `python run.py --help`")
    if not args.config:
        for m in models:
            if m not in supported_VLM:
                close = difflib.get_close_matches(m, list(supported_VLM), n=4)
                raise LaunchError(f"unknown --model {m!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    if args.api_mode:
        from .vlmevalkit.runner import shares_stream

        stateful = [m for m in models if shares_stream(m, m)]
        if stateful:
            raise LaunchError(
                f"{', '.join(stateful)} keep a memory stream and must see items in order; --api-mode runs samples "
                "concurrently. Drop --api-mode; --batch-size N sends N items of the stream to a served model "
                "(--base-url) at once, each reading the memory as it stood before them."
            )
    ours = [d for d in datasets if d in MMSafetyBenchPP.supported_datasets()]
    host_safety = [d for d in datasets if d in HOST_SAFETY_DATASETS]
    if host_safety and args.mode != "infer" and (not args.judge or args.judge in ("rule", "exact_matching")):
        print(
            f"vlmeval-echosafe: warning: {', '.join(host_safety)} without an LLM judge (--judge "
            f"{args.judge or 'missing'}) are scored by the host's string rules, which count undecided answers as "
            "safe; see docs/baselines.md",
            file=sys.stderr,
        )
    for d in ours:
        if variant(d)["source"] == "release":
            locate_release(load_config()["release"])  # a missing download fails here, not after model loading
    if ours and args.mode != "infer":
        judge_kwargs = {"key": args.judge_key}
        if args.judge_base_url:
            judge_kwargs["api_base"] = args.judge_base_url
        if getattr(args, "judge_args", None):
            try:
                judge_kwargs.update(json.loads(args.judge_args))
            except json.JSONDecodeError as err:
                raise LaunchError(f"--judge-args is not JSON ({err}): {args.judge_args!r}") from err
        check_judge_choice(args.judge, judge_kwargs)
    # last: a fresh run records its identity, so every check that can refuse the run comes first
    check_run_identities(args, models, datasets, batch_size)


def check_run_identities(args: Any, models: list[str], datasets: list[str], batch_size: int) -> None:
    """Before any model loads: a plugin row never continues, or reuses, predictions (or an EchoSafe bank) made with
    other settings (:mod:`.vlmevalkit.identity`); a fresh run records its identity."""
    from vlmeval.config import supported_VLM
    from vlmeval.smp import get_pred_file_path

    from .echosafe import ResumeMismatchError
    from .vlmevalkit import identity
    from .vlmevalkit.files import checkpoint_files, finished, rank_checkpoint
    from .vlmevalkit.registry import check_planned_run

    configured = json.loads(Path(args.config).read_text(encoding="utf-8")).get("model", {}) if args.config else {}
    world = int(os.environ.get("WORLD_SIZE", "1"))
    for m in models:
        entry = configured.get(m, {})
        keywords = dict(getattr(supported_VLM.get(m), "keywords", {}))
        if "defense" not in keywords or "class" in entry:  # not a plugin row (a host model or a host class)
            continue
        keywords.update(entry)  # --config overrides, as the host applies them
        work = os.path.join(os.environ.get("MMEVAL_ROOT", args.work_dir), m)  # the host's pred_root
        for d in datasets:
            pred = get_pred_file_path(work, m, d, use_env_format=True)
            resuming = os.path.exists(pred) or bool(finished(checkpoint_files(work, m, d, rank_checkpoint(work, d))))
            try:
                identity.check(
                    identity.path_for(work, m, d), identity.row_identity(keywords, batch_size, world), resuming
                )
                check_planned_run(keywords, d, resuming=resuming)
            except ResumeMismatchError as err:
                raise LaunchError(f"{m} x {d}: {err}") from err


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] in ("report", "agree", "judge-sheet"):  # report tooling: no VLMEvalKit import, no run
        from .report.cli import dispatch

        return dispatch(words)
    if words and words[0] == "serve":  # EchoSafe Guard, the OpenAI-compatible proxy: no VLMEvalKit import
        from .serve.cli import main as serve_main

        return serve_main(words[1:])
    if words and words[0] == "data":  # data check: no VLMEvalKit import, no run
        from .datasets.check import main as data_main

        return data_main(words[1:])
    try:
        flags, words = pop_plugin_flags(words)
    except LaunchError as err:
        print(f"vlmeval-echosafe: error: {err}", file=sys.stderr)
        return 2
    if "-h" in words or "--help" in words:
        print(PLUGIN_FLAGS_HELP)
    sys.argv = [sys.argv[0], *words]
    for key, value in HOST_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _set_order_env(flags)
    host_run, host_inference = import_host()
    import vlmeval.inference_api as host_inference_api
    import vlmeval.inference_mt as host_inference_mt
    import vlmeval.inference_video as host_inference_video
    import vlmeval.utils.mp_util as host_mp_util

    from .vlmevalkit import checkpoint, runner

    restore_tls_verification()
    from .datasets.mmsafetybenchpp import MMSafetyBenchPP
    from .paths import ConfigError, describe_config
    from .vlmevalkit.registry import register

    args = host_run.parse_args()
    models, datasets = _requested(args)
    try:
        print(describe_config(), file=sys.stderr)
        served, words = take_over_base_url(args, models, words)
        sys.argv = [sys.argv[0], *words]
        args.base_url = None
        # Defenses keep their memory and traces next to the host's files for the same model (work_dir/<model>).
        register(work_dir=os.environ.get("MMEVAL_ROOT", args.work_dir), served=served)
        preflight(args, models, datasets, flags.batch_size)
        if flags.batch_size > 1 and args.api_mode:
            raise LaunchError("--batch-size and --api-mode: --api-mode already runs samples concurrently")
    except (LaunchError, ConfigError, ValueError) as err:
        print(f"vlmeval-echosafe: error: {err}", file=sys.stderr)
        return 2
    secrets = collect_secrets(sys.argv)
    install_log_masking(secrets)
    mask_recorded_argv(host_run, secrets)
    tracker = OutcomeTracker()
    tracker.install(host_run)
    record_data_sources(host_run)
    console = HostConsole(args.verbose, [d for d in datasets if d in MMSafetyBenchPP.supported_datasets()], datasets)
    console.install(host_run)
    runner.install(host_inference, flags.batch_size)  # the plugin's rows through the core's loop
    runner.install_api(host_inference_api)
    checkpoint.install(host_inference, host_inference_api, host_inference_mt, host_inference_video, host_mp_util)
    init_process_group()
    host_run.main()
    if rank() != 0:  # the host records outcomes and evaluates on rank 0 only
        return 0
    failures = tracker.failures(models, datasets, args.mode)
    print_run_summary(args.work_dir, args.judge or "", models, datasets)
    if failures:
        print(console.failed(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
