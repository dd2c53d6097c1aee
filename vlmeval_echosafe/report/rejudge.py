"""``python -m vlmeval_echosafe.report.rejudge PRED_FILE --judge rule|MODEL``: judge predictions again.

A thin wrapper over ``evaluate_predictions``: no model runs, nothing is re-inferred. Each judge writes its own
``<stem>_<judge>_judge.jsonl / _items.csv / _score.csv / _score.json`` beside the predictions, so results of
different judges sit side by side (and ``report`` shows them as separate rows). For an API judge the cost
estimate is printed first; ``--dry-run`` stops there.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..judges.prompt import JudgeInputs
from .cost import CostError, estimate, images_for, load_prices, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlmeval_echosafe.report.rejudge",
        description="Judge an existing MM-SafetyBench++ prediction file again.",
    )
    parser.add_argument("pred_file", type=Path, help="the host's prediction file, <work>/<model>/<model>_<dataset>.tsv")
    parser.add_argument("--judge", required=True, help="rule (offline, refusal-only) or an OpenAI-compatible model")
    parser.add_argument("--judge-base-url", default=None, help="http://host:port/v1 of an OpenAI-compatible server")
    parser.add_argument("--judge-key", default=None, help="API key (default: OPENAI_API_KEY)")
    parser.add_argument("--nproc", type=int, default=4, help="parallel judge calls (API judges)")
    parser.add_argument("--judge-image", action="store_true", help="LLM judge: show it each item's image")
    parser.add_argument("--judge-key-phrase", action="store_true", help="LLM judge: show it each item's key phrase")
    parser.add_argument(
        "--max-unknown-rate", type=float, default=None, help="share of undecided items above which it is NOT VALID"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the cost estimate and stop")
    args = parser.parse_args(argv)
    if not args.pred_file.is_file():
        print(f"rejudge: error: {args.pred_file}: no such prediction file", file=sys.stderr)
        return 2
    if args.judge != "rule":
        from ..judges import JudgeConfigError, check_judge_choice

        try:  # an unconfigured judge fails here, before anything is judged (a dry run needs none)
            if not args.dry_run:
                check_judge_choice(args.judge, {"key": args.judge_key, "api_base": args.judge_base_url})
        except JudgeConfigError as err:
            print(f"rejudge: error: {err}", file=sys.stderr)
            return 2
        try:
            prices, source = load_prices()
            inputs = JudgeInputs(image=args.judge_image, key_phrase=args.judge_key_phrase)
            print(render(estimate(args.pred_file, args.judge, prices, str(source), inputs=inputs)) + "\n")
        except CostError as err:
            print(f"rejudge: no cost estimate: {err}", file=sys.stderr)
    if args.dry_run:
        print("dry run: nothing judged")
        return 0
    return _rejudge(args)


def _rejudge(args: argparse.Namespace) -> int:
    from ..vlmevalkit.patches import HOST_ENV_DEFAULTS, restore_tls_verification

    for key, value in HOST_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from ..datasets.mmsafetybenchpp import evaluate_predictions, output_paths
    from ..datasets.validate import DatasetError
    from ..evaluation import MAX_UNKNOWN_RATE
    from ..judges import JudgeConfigError, make_judge

    restore_tls_verification()
    kwargs = {"model": args.judge, "nproc": args.nproc}
    if args.judge_base_url:
        kwargs["api_base"] = args.judge_base_url
    if args.judge_key:
        kwargs["key"] = args.judge_key
    kwargs.update({k: True for k in ("judge_image", "judge_key_phrase") if getattr(args, k)})
    max_unknown = MAX_UNKNOWN_RATE if args.max_unknown_rate is None else args.max_unknown_rate
    try:
        judge = make_judge(kwargs)
        images = images_for(args.pred_file) if judge.wants_image else None
        result = evaluate_predictions(args.pred_file, judge, args.nproc, max_unknown, image_for=images)
    except (JudgeConfigError, DatasetError, CostError) as err:
        print(f"rejudge: error: {err}", file=sys.stderr)
        return 2
    paths = output_paths(args.pred_file, judge.name)
    from ..metrics import safe_rate_name

    note = " (refusal-only: no quality score)" if judge.refusal_only else ""
    ccr, safe = result["primary"], safe_rate_name(judge.refusal_only)
    print(
        f"judge {judge.name}{note}: {ccr} {result[ccr]:.1f}, RR {result['RR']:.1f}, {safe} {result[safe]:.1f} "
        f"over {result['items']} items, {result['unknown']} unknown" + ("" if result["valid"] else " (NOT VALID)")
    )
    for key, path in paths.items():
        print(f"  {key:8s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
