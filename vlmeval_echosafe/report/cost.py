"""``python -m vlmeval_echosafe.report.cost PRED_FILE --judge MODEL``: what an API judge run would cost.

It only estimates (``--dry-run`` is implied and accepted for clarity). The LLM judge asks up to two questions
per item (judges/prompt.py): the decision, always, and the quality score, only when the decision is the right
behaviour for the label. So the estimate is a range: every item's decision prompt (plus one image at OpenAI's
"low" detail when ``--judge-image`` is on), and at most every item's quality prompt on top. Prompts are the real
ones (``JudgeInputs.decision_prompt``, ``quality_prompt``), counted with tiktoken; each call adds the expected
reply (and, for reasoning models, assumed hidden reasoning tokens); prices come from
``task_configs/judge_prices.yaml``.
Items the judge would not be asked (empty or failed predictions, judgements already cached) are left out.

When tiktoken cannot load its encoding (it downloads the BPE file on first use; offline that fails) the count
falls back to characters / 4, the usual rule of thumb for English text with OpenAI tokenizers, and the output
says so on its own line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..judges.base import JudgeItem, unanswerable
from ..judges.prompt import RIGHT, JudgeInputs, quality_prompt
from ..judges.records import load_records, record_key
from ..paths import config_file

PRICES_FILE = "task_configs/judge_prices.yaml"
CHARS_PER_TOKEN = 4
# One image at OpenAI's "low" detail: what VLMEvalKit's OpenAIWrapper sends (img_detail='low' by default).
IMAGE_TOKENS = 85


class CostError(ValueError):
    """Cannot estimate (unreadable predictions, no price for the judge); printed without a traceback."""


@dataclass
class Estimate:
    judge: str
    version: str
    predictions: str
    rows: int
    to_judge: int
    not_sent: int
    cached: int
    counting: str
    approximate: bool
    decision_input_tokens: int  # every item to judge: the decision call (and its image)
    quality_input_tokens: int  # at most: every item also gets the quality call
    output_tokens_per_call: int
    reasoning_tokens_per_call: int
    input_price: float | None
    output_price: float | None
    prices_source: str
    known_models: list[str] | None = None

    @property
    def calls(self) -> tuple[int, int]:
        """(fewest, most) judge calls: decisions only, or every decision followed by a quality call."""
        return self.to_judge, 2 * self.to_judge

    @property
    def input_tokens(self) -> tuple[int, int]:
        return self.decision_input_tokens, self.decision_input_tokens + self.quality_input_tokens

    @property
    def output_tokens(self) -> tuple[int, int]:
        per = self.output_tokens_per_call + self.reasoning_tokens_per_call
        return self.calls[0] * per, self.calls[1] * per

    @property
    def cost(self) -> tuple[float, float] | None:
        """(fewest, most) USD, or None without a price."""
        if self.input_price is None or self.output_price is None:
            return None
        return tuple(  # type: ignore[return-value]
            (i * self.input_price + o * self.output_price) / 1e6
            for i, o in zip(self.input_tokens, self.output_tokens, strict=True)
        )


def load_prices(path: Path | None = None) -> tuple[dict[str, Any], Path]:
    path = path or config_file(PRICES_FILE)
    with path.open(encoding="utf-8") as fh:
        table = yaml.safe_load(fh) or {}
    if not isinstance(table.get("models"), dict):
        raise CostError(f"{path}: expected a 'models:' mapping of model -> {{input, output, encoding}}")
    return table, path


def token_counter(encoding: str) -> tuple[Callable[[str], int], str, bool]:
    """(count, description, approximate): tiktoken if its encoding loads, else chars / 4 (said loudly)."""
    try:
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
    except Exception as err:  # ImportError, or the BPE download failing offline
        why = f"{type(err).__name__}: {str(err).splitlines()[0][:100]}" if str(err) else type(err).__name__
        desc = (
            f"APPROXIMATE: characters/{CHARS_PER_TOKEN}, because tiktoken could not load {encoding!r} "
            f"({why}). "
            "For exact counts run once with network access (tiktoken caches the file) or set "
            "TIKTOKEN_CACHE_DIR "
            "to a folder holding tiktoken's cache."
        )
        return (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)), desc, True
    return (lambda text: len(enc.encode(text, disallowed_special=()))), f"tiktoken {encoding}", False


def read_predictions(path: Path) -> pd.DataFrame:
    """The host's prediction file, read the way ``vlmeval.smp.load`` reads it (TSV, CSV or XLSX)."""
    if not path.is_file():
        raise CostError(f"{path}: no such prediction file")
    readers = {".tsv": lambda p: pd.read_csv(p, sep="\t"), ".csv": pd.read_csv, ".xlsx": pd.read_excel}
    if path.suffix not in readers:
        raise CostError(f"{path}: expected a .tsv, .csv or .xlsx prediction file")
    frame = readers[path.suffix](path)
    missing = [c for c in ("index", "question", "label", "prediction") if c not in frame.columns]
    if missing:
        raise CostError(f"{path}: missing columns {missing}; columns found: {list(frame.columns)}")
    return frame


def judge_items(preds: pd.DataFrame, image_for: Callable[[Any], str] | None = None) -> list[JudgeItem]:
    """The items exactly as evaluation builds them (``judges.records.item_from_row``, evaluation.py)."""
    from ..judges.records import item_from_row

    return [item_from_row(r, r["prediction"], image_for(r) if image_for else None) for _, r in preds.iterrows()]


def images_for(pred_file: Path, folder: Path | None = None) -> Callable[[Any], str]:
    """The image files of the dataset a ``<model>_<dataset>.tsv`` prediction file belongs to, written to ``folder``
    (default: beside the predictions), for a judge that looks at images, as evaluation gives them."""
    from ..datasets.variants import image_files, load_variant
    from .collect import dataset_names

    name = next((d for d in dataset_names() if pred_file.stem.endswith(f"_{d}")), None)
    if name is None:
        raise CostError(f"{pred_file}: not a <model>_<dataset> prediction file of MM-SafetyBench++; no images")
    return image_files(load_variant(name), folder or pred_file.parent / f"{pred_file.stem}_judge_images")


def records_path(pred_file: Path, judge: str) -> Path:
    """The judge cache evaluation keeps next to the predictions (same rule as ``output_paths``)."""
    return pred_file.parent / f"{pred_file.stem}_{judge.replace('/', '_')}_judge.jsonl"


def estimate(
    pred_file: Path,
    judge: str,
    prices: dict[str, Any],
    prices_source: str,
    output_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    input_price: float | None = None,
    output_price: float | None = None,
    encoding: str | None = None,
    inputs: JudgeInputs | None = None,
) -> Estimate:
    inputs = inputs or JudgeInputs()
    entry = prices["models"].get(judge, {})
    defaults = prices.get("defaults", {})
    preds = read_predictions(pred_file)
    cache = load_records(records_path(pred_file, judge))

    def cached_decision(it: JudgeItem) -> str | None:  # under the LLM judge's cache key (LLMJudge.key_extra)
        rec = cache.get(record_key(judge, inputs.version, it, inputs.key_extra(it)))
        return None if rec is None else rec.get("decision")

    # Image digests are part of the cache key; the files go to a temporary folder: a dry run writes nothing.
    with tempfile.TemporaryDirectory() as tmp:
        items = judge_items(preds, images_for(pred_file, Path(tmp)) if inputs.image else None)
        sendable = [it for it in items if unanswerable(it) is None]
        todo = [it for it in sendable if cached_decision(it) in (None, "unknown")]
    count, counting, approximate = token_counter(encoding or entry.get("encoding", "o200k_base"))
    decision_tokens = sum(count(inputs.decision_prompt(it)) + IMAGE_TOKENS * inputs.image for it in todo)
    quality_tokens = sum(count(quality_prompt(it, RIGHT[it.label])) for it in todo)
    out_per = int(output_tokens if output_tokens is not None else defaults.get("output_tokens", 60))
    reasoning = bool(entry.get("reasoning", False))
    reason_per = int(
        reasoning_tokens if reasoning_tokens is not None else (defaults.get("reasoning_tokens", 0) if reasoning else 0)
    )
    return Estimate(
        judge=judge,
        version=inputs.version,
        predictions=str(pred_file),
        rows=len(items),
        to_judge=len(todo),
        not_sent=len(items) - len(sendable),
        cached=len(sendable) - len(todo),
        counting=counting,
        approximate=approximate,
        decision_input_tokens=decision_tokens,
        quality_input_tokens=quality_tokens,
        output_tokens_per_call=out_per,
        reasoning_tokens_per_call=reason_per,
        input_price=input_price if input_price is not None else entry.get("input"),
        output_price=output_price if output_price is not None else entry.get("output"),
        prices_source=prices_source,
        known_models=sorted(prices["models"]),
    )


def _did_you_mean(est: Estimate) -> str:
    import difflib

    known = est.known_models or []
    close = difflib.get_close_matches(est.judge, known, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(known)})"


def render(est: Estimate) -> str:
    per_item = est.decision_input_tokens / est.to_judge if est.to_judge else 0.0
    per_q = est.quality_input_tokens / est.to_judge if est.to_judge else 0.0
    reasoning = (
        f" + {est.reasoning_tokens_per_call} assumed hidden reasoning (billed as output)"
        if est.reasoning_tokens_per_call
        else ""
    )
    (lo_in, hi_in), (lo_out, hi_out), (lo_calls, hi_calls) = est.input_tokens, est.output_tokens, est.calls
    lines = [
        "Judge cost estimate (dry run: nothing is sent to the judge)",
        f"judge model:     {est.judge} (prompts {est.version})",
        f"predictions:     {est.predictions} ({est.rows} rows)",
        f"items to judge:  {est.to_judge}  (not sent: {est.not_sent} empty/failed predictions; "
        f"{est.cached} already judged in the cache and reused)",
        f"judge calls:     {lo_calls:,} to {hi_calls:,}: one decision call per item, plus a quality call for each "
        "item whose decision is the right behaviour for its label (a wrong one scores 0 without a call)",
        f"token counting:  {est.counting}",
        f"input tokens:    {lo_in:,} to {hi_in:,} ({per_item:.0f} per decision call, {per_q:.0f} per quality call)",
        f"output tokens:   {lo_out:,} to {hi_out:,} ({est.output_tokens_per_call} reply{reasoning} per call)",
    ]
    if est.cost is None:
        lines.append(
            f"price:           none for {est.judge!r} in {est.prices_source}{_did_you_mean(est)}: add it "
            "there or pass --input-price and --output-price (USD per 1M tokens)"
        )
    else:
        lines += [
            f"price:           ${est.input_price:g} / 1M input, ${est.output_price:g} / 1M output "
            f"({est.prices_source}; user-maintained, check before relying on it)",
            f"estimated cost:  ${est.cost[0]:.4f} to ${est.cost[1]:.4f}"
            + ("  (APPROXIMATE token count, see above)" if est.approximate else ""),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlmeval_echosafe.report.cost",
        description="Estimate the token use and price of judging a prediction file.",
    )
    parser.add_argument("pred_file", type=Path, help="the host's prediction file, <model>_<dataset>.tsv")
    parser.add_argument("--judge", required=True, help="judge model name as in the price table, e.g. gpt-5-mini")
    parser.add_argument("--prices", type=Path, default=None, help=f"price table (default {PRICES_FILE})")
    parser.add_argument("--output-tokens", type=int, default=None, help="expected visible reply tokens per item")
    parser.add_argument(
        "--reasoning-tokens",
        type=int,
        default=None,
        help="hidden reasoning tokens per item (default from the table for reasoning models)",
    )
    parser.add_argument("--input-price", type=float, default=None, help="USD per 1M input tokens (overrides table)")
    parser.add_argument("--output-price", type=float, default=None, help="USD per 1M output tokens (overrides table)")
    parser.add_argument("--encoding", default=None, help="tiktoken encoding (default from the table, o200k_base)")
    parser.add_argument("--judge-image", action="store_true", help="the judge is shown each item's image")
    parser.add_argument("--judge-key-phrase", action="store_true", help="the judge is shown each item's key phrase")
    parser.add_argument("--dry-run", action="store_true", help="accepted for clarity: this command only estimates")
    parser.add_argument("--json", type=Path, default=None, help="also write the estimate as JSON here")
    args = parser.parse_args(argv)
    if args.judge == "rule":
        print("judge 'rule' runs offline (refusal patterns): no API cost, no tokens.")
        return 0
    try:
        prices, source = load_prices(args.prices)
        est = estimate(
            args.pred_file,
            args.judge,
            prices,
            str(source),
            args.output_tokens,
            args.reasoning_tokens,
            args.input_price,
            args.output_price,
            args.encoding,
            JudgeInputs(image=args.judge_image, key_phrase=args.judge_key_phrase),
        )
    except (CostError, OSError, yaml.YAMLError) as err:
        print(f"cost: error: {err}", file=sys.stderr)
        return 2
    print(render(est))
    if args.json:
        totals = {"calls": est.calls, "input_tokens": est.input_tokens, "output_tokens": est.output_tokens}
        payload = {**asdict(est), **totals, "cost_usd": est.cost}
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0 if est.cost is not None else 2


if __name__ == "__main__":
    sys.exit(main())
