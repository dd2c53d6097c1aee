"""EchoSafe's cost against the bare inner model (and every defense's), measured side by side in one process.

One inner model object and the same items for all. Blocks of ``--block`` items go round every configuration in
turn, starting with a different one each block, so machine noise hits all of them alike; every ratio is of total
times within this one run.

Rows: ``Base`` and each defense one item at a time (B = 1, as the host's loop runs them); with batching,
``Base@B8`` and ``EchoSafe@B8`` take each block as one micro-batch (`generate_batch`, what `run.py --batch-size 8`
calls) and ``EchoSafe@B8/s1`` is EchoSafe with ``staleness: 1`` (a micro-batch's reflections decode with the next
one's answers). Like the launcher's loop, these two name the next block before answering one (``prefetch_batch``),
so its text keys are encoded while this one is answered; ``EchoSafe@B8/no-prefetch`` is EchoSafe@B8 without that
hint, in the same run, and ``prefetch_outputs_identical`` compares their answers, retrievals and insights. Batched
rows give each item an equal share of the block's time.

``--answer-tokens N`` makes every answer N tokens long (end-of-turn suppressed until then): a random-weight model
stops at random, while real answers run to hundreds of tokens. Follow-up turns (EchoSafe's reflection) keep their
own budget. In that mode the defenses default to EchoSafe alone: ECSO's yes/no self-check or AdaShield's answer
stretched to N tokens would time nothing real.

Written per row: wall and CPU seconds per item, the ratio of total time to Base at the same batch size (wall and
CPU), inner-model calls, and per item the generated tokens and forward passes of answers and of follow-ups; for
EchoSafe rows the time split from its trace (embed / retrieve / answer / reflect / store, mean per item), the embed
part cut into the text key (the time the answer's path spent on text keys: the encoding, or the wait for
prefetched keys) and the image key, and ``bookkeeping`` (the row's time no part explains); MiniLM's own time per
item, wherever it ran, is ``key_text_compute_mean_s``. ``model-independent overhead per item: X ms`` is EchoSafe@B8's
text key + retrieve + store + bookkeeping.
After the timed blocks, the key encoder before packing (one text per pass) and after are timed side by side on the
same questions, and the counts the FLOPs model reads are written (``counts``). The last line printed is
``EchoSafe@B8 / Base@B8: R`` (wall time).

    python benchmarks/bench_overhead.py --items 32 --answer-tokens 256 --out benchmarks/results/overhead_cpu_256.json
    python benchmarks/bench_overhead.py --items 48 --out benchmarks/results/overhead_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from demo_items import as_host_model, base_model, hand_off, inner_and_items
from overhead_parts import key_embedding_side_by_side, split, time_text_keys, token_counts

# the backend's entry points: one request (`generate_turns`), a batch kept for follow-ups (`start_batch`, which a
# batch of answers alone also goes through), follow-ups, and answers decoded with earlier follow-ups
COUNTED = ("generate_turns", "start_batch", "extend_batch", "start_and_extend")
DECODED = ("answer_prompt_tokens", "answer_tokens", "follow_up_tokens", "forwards", "follow_up_forwards")
PARTS = ("embed", "retrieve", "answer", "reflect", "store")


def count_calls(model, calls: Counter) -> None:
    """Wrap the inner model's entry points so every call is counted under the active label."""
    for name in COUNTED:
        method = getattr(model, name, None)
        if method is None:
            continue

        def wrapped(*args, _m=method, _n=name, **kwargs):
            calls[(calls["_active"], _n)] += 1
            return _m(*args, **kwargs)

        setattr(model, name, wrapped)


def build(args: argparse.Namespace):
    """(inner, dataset, messages, models, batched labels, run dir, EchoSafe labels)."""
    from vlmeval_echosafe.catalog import _class, defense_entries, defense_settings
    from vlmeval_echosafe.core.inner import adapt

    forced = args.answer_tokens
    overrides = {"max_new_tokens": forced, "min_new_tokens": forced} if forced else {}
    inner, dataset, messages = inner_and_items(args.inner, args.items + 1, **overrides)
    entries, extra = defense_entries()
    if args.defenses is not None:
        names = args.defenses
    elif args.answer_tokens:
        names = ["EchoSafe"]
    else:
        names = [n for n in entries if "-" not in n or n.startswith("AdaShield")]
    run_dir = Path(tempfile.mkdtemp())
    models = {"Base": base_model(inner, f"Base_{args.inner}", run_dir / "Base")}
    batched: dict[str, int] = {}
    echo: dict[str, str] = {}  # label -> registry name, for the rows with an EchoSafe trace
    prefetched: set[str] = set()  # batched rows told the next block before each one, as the launcher's loop does
    can_batch = not args.no_batch and adapt(inner).batched
    for name in names:
        cls = _class(entries[name]["class"], "wrappers/defenses.yaml")
        settings = defense_settings(cls, entries[name], extra, args.inner, "plugin")

        def make(label: str, changes: dict | None = None, _cls=cls, _settings=settings, _name=name):
            run = run_dir / label
            settings = {**_settings, **(changes or {})}
            return as_host_model(_cls, inner, name=f"{_name}_{args.inner}", run_dir=run, settings=settings)

        models[name] = make(name)
        if entries[name]["class"] == "EchoSafe":
            echo[name] = name
        if name == "EchoSafe" and can_batch:
            label = f"EchoSafe@B{args.block}"
            models[label], batched[label], echo[label] = make(label), args.block, name
            prefetched.add(label)
            label = f"EchoSafe@B{args.block}/no-prefetch"
            models[label], batched[label], echo[label] = make(label), args.block, name
            if not args.no_staleness:
                label = f"EchoSafe@B{args.block}/s1"
                models[label], batched[label], echo[label] = make(label, {"staleness": 1}), args.block, name
                prefetched.add(label)
    if can_batch:
        models[f"Base@B{args.block}"] = base_model(inner, f"Base_{args.inner}", run_dir / f"Base@B{args.block}")
        batched[f"Base@B{args.block}"] = args.block
    return inner, dataset, messages, models, batched, run_dir, echo, prefetched


def warm_up(models: dict, batched: dict, echo: dict, messages: list, dataset) -> None:
    """Weights, encoders, grammars and first allocations, on the first messages (not timed, not in the results):
    each EchoSafe row warms up on a twin writing to a scratch folder, so its timed bank starts empty."""
    from dataclasses import asdict

    for label, model in models.items():
        if label in echo:
            core = model.defense
            model = as_host_model(
                type(core), core.inner, name=core.name, run_dir=Path(tempfile.mkdtemp()), settings=asdict(core.settings)
            )
            hand_off(model, dataset)
        if label in batched:
            model.generate_batch(messages[:2], dataset=dataset.dataset_name)
            model.flush()
        else:
            model.generate(messages[0], dataset=dataset.dataset_name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48, help="items timed (message 0 is the warm-up, timed items follow)")
    ap.add_argument("--block", type=int, default=8, help="items per block; also the micro-batch size")
    ap.add_argument("--answer-tokens", type=int, default=0, help="every answer exactly this long (0: the model's own)")
    ap.add_argument("--no-batch", action="store_true", help="leave out the micro-batched rows")
    ap.add_argument("--no-staleness", action="store_true", help="leave out the EchoSafe staleness: 1 row")
    ap.add_argument("--inner", default="TinyQwen2VL", help="a model name from wrappers/models.yaml")
    ap.add_argument("--defenses", nargs="*", default=None, help="names from wrappers/defenses.yaml")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="benchmarks/results/overhead_cpu_tiny.json")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    inner, dataset, messages, models, batched, run_dir, echo, prefetched = build(args)
    for model in models.values():
        hand_off(model, dataset)
    calls: Counter = Counter()
    work: Counter = Counter()
    count_calls(inner, calls)
    decoded = getattr(inner, "decoded", Counter())  # what the backend decoded (other inner models: nothing)
    calls["_active"] = "warmup"
    warm_up(models, batched, echo, messages, dataset)
    # wrapped after the warm-up: only timed calls are counted
    text_key_s, text_key_compute_s = time_text_keys(models, echo)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    wall: dict[str, list[float]] = {label: [] for label in models}
    cpu: dict[str, list[float]] = {label: [] for label in models}
    blocks: dict[str, list[float]] = {label: [] for label in batched}  # wall s of each micro-batch call
    flushed: dict[str, float] = {label: 0.0 for label in batched}  # wall s of the end-of-stream flush
    load_before = os.getloadavg()
    labels = list(models)
    timed = messages[1:]
    answers: dict[str, list[str]] = {label: [] for label in models}
    for b, start in enumerate(range(0, len(timed), args.block)):
        block = timed[start : start + args.block]
        upcoming = timed[start + args.block : start + 2 * args.block]
        last = start + args.block >= len(timed)
        for label in labels[b % len(labels) :] + labels[: b % len(labels)]:
            model, calls["_active"] = models[label], label
            chunks = [block] if label in batched else [[m] for m in block]
            for chunk in chunks:
                before = Counter(decoded)
                sync()
                t, c = time.perf_counter(), time.process_time()
                if label in batched:
                    if label in prefetched and upcoming:
                        model.prefetch_batch(upcoming, dataset=dataset.dataset_name)
                    answers[label] += model.generate_batch(chunk, dataset=dataset.dataset_name)
                    sync()
                    blocks[label].append(time.perf_counter() - t)
                    if last:  # a pipelined row's last reflections decode here, on their own (timed with the rest)
                        model.flush()
                        sync()
                        flushed[label] = time.perf_counter() - t - blocks[label][-1]
                else:
                    answers[label].append(model.generate(chunk[0], dataset=dataset.dataset_name))
                sync()
                wall[label] += [(time.perf_counter() - t) / len(chunk)] * len(chunk)
                cpu[label] += [(time.process_time() - c) / len(chunk)] * len(chunk)
                work.update({(label, k): decoded[k] - before[k] for k in DECODED})
    load_after = os.getloadavg()

    n = len(timed)
    result = {
        "bench": "overhead",
        "inner": args.inner,
        "items": n,
        "block": args.block,
        "answer_tokens": args.answer_tokens or None,
        "device": str(getattr(getattr(inner, "model", None), "device", "n/a")),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "models": {},
    }
    for label in models:
        base = f"Base@B{batched[label]}" if label in batched else "Base"
        row = {
            "batch": batched.get(label, 1),
            "s_per_item_wall_mean": sum(wall[label]) / n,
            "s_per_item_cpu_mean": sum(cpu[label]) / n,
            "s_per_item_wall_median": statistics.median(wall[label]),
            "ratio_vs_base_same_batch_wall": sum(wall[label]) / sum(wall[base]),
            "ratio_vs_base_same_batch_cpu": sum(cpu[label]) / sum(cpu[base]),
            "ratio_vs_base_one_at_a_time_wall": sum(wall[label]) / sum(wall["Base"]),
            "inner_calls_per_item": {c: calls[(label, c)] / n for c in COUNTED if calls[(label, c)]},
            # tokens per item; forward passes per item (a batched pass serves every row: 1/B of it per item)
            "per_item": {k: work[(label, k)] / n for k in DECODED},
        }
        if label in batched:
            row["block_wall_s"] = blocks[label]
            row["flush_wall_s"] = flushed[label]
            # from the second block on, a pipelined row's every call carries the previous block's reflections; the
            # first block carries none and the last block's are flushed alone (both are in the totals above)
            if len(blocks[label]) > 1:
                row["steady_ratio_vs_base_same_batch_wall"] = sum(blocks[label][1:]) / sum(blocks[base][1:])
        if label in echo:
            settings = models[label].defense.settings
            trace_path = run_dir / label / f"{echo[label]}_{args.inner}_{dataset.dataset_name}_echosafe_trace.jsonl"
            trace = [json.loads(x) for x in trace_path.read_text().splitlines()]
            # batched parts are each item's equal share of the batch's calls
            row["parts_mean_s"] = {k: sum(t["timings"].get(k, 0.0) for t in trace) / len(trace) for k in PARTS}
            row["insights_written"] = sum(t["insight_id"] is not None for t in trace)
            row["reflect_tokens"] = settings.reflect_tokens
            row["staleness"] = getattr(settings, "staleness", 0)
            row["split_mean_s"] = split(row, sum(text_key_s[label]), n)
            row["key_text_compute_mean_s"] = sum(text_key_compute_s[label]) / n
            row["key_text_on_path_per_call_s"] = text_key_s[label]  # a batched row: one call per block
            row["prefetch"] = label in prefetched
            row["outcome"] = [(t["retrieved"], t["insight_id"], t["insight_decision"]) for t in trace]
        result["models"][label] = row
    head = f"EchoSafe@B{args.block}"
    if f"{head}/no-prefetch" in result["models"]:
        # the prefetch changes when the text keys are computed, never what is answered, retrieved or stored
        other = f"{head}/no-prefetch"
        result["prefetch_outputs_identical"] = (
            answers[head] == answers[other] and result["models"][head]["outcome"] == result["models"][other]["outcome"]
        )
    for row in result["models"].values():
        row.pop("outcome", None)
    if echo:
        encoder = models[next(iter(echo))].defense.keys
        questions = [next(x["value"] for x in reversed(m) if x["type"] == "text") for m in timed]
        result["key_embedding_side_by_side"] = key_embedding_side_by_side(encoder.text, questions, args.block)
        result["counts"] = token_counts(inner, timed, encoder.text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average (1 min) before/after: {result['machine']['loadavg_1min_before_after']}")
    for label, r in result["models"].items():
        p, steady = r["per_item"], r.get("steady_ratio_vs_base_same_batch_wall")
        print(
            f"{label:24s} {r['s_per_item_wall_mean']:.4f} s/item  x{r['ratio_vs_base_same_batch_wall']:.2f} wall "
            f"x{r['ratio_vs_base_same_batch_cpu']:.2f} cpu vs Base@B{r['batch']}  tokens/item answer "
            f"{p['answer_tokens']:.1f} follow-up {p['follow_up_tokens']:.1f}; forwards/item {p['forwards']:.1f} "
            f"(follow-up only {p['follow_up_forwards']:.1f})"
            + (f"; steady state x{steady:.2f}" if r.get("staleness") and steady is not None else "")
        )
    if "key_embedding_side_by_side" in result:
        side = result["key_embedding_side_by_side"]
        print(
            f"key embedding per item, same questions side by side: one text per pass {side['one_text_per_pass_ms']:.2f}"
            f" ms, packed {side['packed_ms']:.2f} ms (x{side['ratio']:.2f})"
        )
    if head in result["models"] and "split_mean_s" in result["models"][head]:
        parts = {k: 1000 * v for k, v in result["models"][head]["split_mean_s"].items()}
        print(
            f"{head} split per item (ms): "
            + ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if k != "model_independent")
        )
        compute = 1000 * result["models"][head]["key_text_compute_mean_s"]
        print(f"model-independent overhead per item: {parts['model_independent']:.2f} ms")
        print(
            f"  (key_text is the wait for the text keys on the answer's path; MiniLM computed them in {compute:.2f} "
            "ms per item, ahead, while the block before was answered)"
        )
        nopre = result["models"].get(f"{head}/no-prefetch", {}).get("split_mean_s")
        if nopre:
            print(
                f"{head}/no-prefetch, same run: model-independent {1000 * nopre['model_independent']:.2f} ms "
                f"(key_text {1000 * nopre['key_text']:.2f}); outputs identical with and without prefetch: "
                f"{result['prefetch_outputs_identical']}"
            )
    if head in result["models"]:
        print(f"{head} / Base@B{args.block}: {result['models'][head]['ratio_vs_base_same_batch_wall']:.2f}")


if __name__ == "__main__":
    main()
