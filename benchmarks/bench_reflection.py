"""EchoSafe's reflection decoded two ways on the same answered micro-batches, side by side in one process: one token
per forward pass (transformers' `generate` under `FormProcessor`) and jump-forward (`decode.decode_form`: the form's
fixed labels fed to the model several tokens per pass). Both write the same tokens; the bench checks it per row.

Each micro-batch of ``--block`` items is answered once (EchoSafe's answer turn with its safety instruction, answers
forced to ``--answer-tokens``); its session is copied and each copy is reflected on by one of the two ways, the
first way alternating between blocks. Written: ms per item of each way and their ratio, tokens and forward passes
per item, reflections equal, and the answer call's time per item for scale.

    python benchmarks/bench_reflection.py --items 32 --answer-tokens 256 --threads 1 \\
        --out benchmarks/results/reflection_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

from demo_items import base_model, inner_and_items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--block", type=int, default=8, help="items per micro-batch")
    ap.add_argument("--answer-tokens", type=int, default=256, help="every answer exactly this long (0: the model's)")
    ap.add_argument("--inner", default="TinyQwen2VL", help="a model name from wrappers/models.yaml")
    ap.add_argument("--reflect-tokens", type=int, default=0, help="line cap of the form (0: the registry's setting)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="benchmarks/results/reflection_cpu_tiny.json")
    args = ap.parse_args()

    import torch

    from vlmeval_echosafe.catalog import defense_entries, defense_settings
    from vlmeval_echosafe.defenses import echosafe_prompts as prompts
    from vlmeval_echosafe.echosafe import EchoSafe
    from vlmeval_echosafe.models.constrained import Constraint
    from vlmeval_echosafe.vlmevalkit.model import checked_message
    from vlmeval_echosafe.vlmevalkit.rows import split_message

    if args.threads:
        torch.set_num_threads(args.threads)
    forced = args.answer_tokens
    inner, dataset, messages = inner_and_items(
        args.inner, args.items, **({"max_new_tokens": forced, "min_new_tokens": forced} if forced else {})
    )
    entries, extra = defense_entries()
    cap = (
        args.reflect_tokens
        or defense_settings(EchoSafe, entries["EchoSafe"], extra, args.inner, "plugin")["reflect_tokens"]
    )
    form = Constraint(prompts.form_grammar(), line_tokens=cap, max_new_tokens=prompts.form_budget(cap))
    host = base_model(inner, f"Base_{args.inner}")  # the message checks the host applies to the plugin's rows
    host.set_dump_image(dataset.dump_image)

    def turn(message):
        images, question = split_message(checked_message(host, message))
        text = prompts.SAFETY_INSTRUCTION.format(question=question)
        return [
            {
                "role": "user",
                "content": [*({"type": "image", "value": p} for p in images), {"type": "text", "value": text}],
            }
        ]

    ways = {"one token per pass": False, "jump-forward": True}
    seconds = {w: 0.0 for w in ways}
    counts = {w: {"tokens": 0, "forwards": 0} for w in ways}
    answer_s, equal, n = 0.0, 0, 0
    for b, start in enumerate(range(0, len(messages), args.block)):
        convs = [turn(m) for m in messages[start : start + args.block]]
        t = time.perf_counter()
        _, session = inner.start_batch(convs)
        answer_s += time.perf_counter() - t
        texts = [inner.next_turn_text(session, prompts.REFLECT_TEMPLATE, row) for row in range(len(convs))]
        replies = {}
        for way in list(ways)[b % 2 :] + list(ways)[: b % 2]:
            copied = copy.deepcopy(session)
            before = dict(inner.decoded)
            t = time.perf_counter()
            replies[way] = inner.extend_batch(copied, texts, None, None, form, jump_forward=ways[way])
            seconds[way] += time.perf_counter() - t
            counts[way]["tokens"] += inner.decoded["follow_up_tokens"] - before.get("follow_up_tokens", 0)
            counts[way]["forwards"] += inner.decoded["follow_up_forwards"] - before.get("follow_up_forwards", 0)
        equal += sum(a == b for a, b in zip(*replies.values(), strict=True))
        n += len(convs)
    per_token, jump = (seconds[w] for w in ways)
    result = {
        "bench": "reflection",
        "inner": args.inner,
        "items": n,
        "block": args.block,
        "answer_tokens": forced or None,
        "reflect_tokens": cap,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "loadavg_1min": round(os.getloadavg()[0], 2),
        },
        "answer_ms_per_item": 1000 * answer_s / n,
        "ways": {
            w: {
                "ms_per_item": 1000 * seconds[w] / n,
                "tokens_per_item": counts[w]["tokens"] / n,
                "forwards_per_block": counts[w]["forwards"] * args.block / n,
            }
            for w in ways
        },
        "jump_forward_over_one_per_pass": jump / per_token,
        "reflections_equal": f"{equal}/{n}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for w, r in result["ways"].items():
        print(
            f"{w:20s} {r['ms_per_item']:7.1f} ms/item  tokens/item {r['tokens_per_item']:.1f}  "
            f"forward passes per micro-batch {r['forwards_per_block']:.1f}"
        )
    print(f"answer call {result['answer_ms_per_item']:.1f} ms/item; reflections equal {result['reflections_equal']}")
    print(f"jump-forward / one token per pass: {result['jump_forward_over_one_per_pass']:.2f}")


if __name__ == "__main__":
    main()
