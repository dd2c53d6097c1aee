"""FLOPs per item at the registered models' real shapes, from the token counts a run measured by role (an ESTIMATE).

The standard transformer estimate (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", Table 1): a forward
pass costs, per token,

    2 * N  +  2 * n_layer * n_ctx * d_attn

where N is the parameters of the matrix multiplies (embedding lookups excluded), n_ctx the positions the token
attends to and d_attn = heads * head_dim. Summed over tokens: a causal pass of ``new`` tokens after ``cached``
positions attends to ``new * cached + new * (new + 1) / 2`` positions in all; a bidirectional one (the vision tower,
the key encoder) to ``new * new``. Each generated token also pays the LM head, 2 * hidden * vocab. The vision tower
runs once per image over its patches, then the projector over the image tokens. Shapes come from
``task_configs/model_shapes.yaml``.

The per-item counts come from ``benchmarks/bench_overhead.py``'s JSON (measured on the tiny model): answer tokens as
forced, image count, the key encoder's tokens (MiniLM's tokenizer, the real one); the text of the prompts, insights
and reflection are counted in the tiny model's tokenizer and rescaled to an English subword tokenizer by the ratio of
MiniLM's tokens to the tiny tokenizer's on the same questions (the real models' tokenizers are not available offline).

    python -m vlmeval_echosafe.report.flops benchmarks/results/overhead_cpu_256.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .shapes import (
    SHAPES_FILE,
    CrossAttention,
    Model,
    Transformer,
    Vision,
    continue_flops,
    load_aux,
    load_shapes,
    request_flops,
)

__all__ = ["CrossAttention", "Model", "Transformer", "Vision", "load_aux", "load_shapes", "request_flops"]

PAPER_FLOPS_RATIO = 1.69  # the paper's EchoSafe FLOPs over the bare model


@dataclass(frozen=True)
class Workload:
    """One item's tokens by role (text in real-tokenizer tokens)."""

    images: float
    prompt_text: float  # the bare request (question and chat template)
    added_text: float  # what the defense adds to the answer prompt (instruction, insights)
    answer: float  # generated answer tokens
    reflect_prompt: float = 0.0  # the reflection turn's prompt, continuing the answer's conversation
    reflect: float = 0.0  # generated reflection tokens
    key_text: float = 0.0  # key encoder tokens (the question)


def item_flops(model: Model, key_encoder: Transformer, w: Workload) -> dict[str, float]:
    """FLOPs of one item by phase."""
    text = model.text
    prompt = model.prompt_positions(w.images, w.prompt_text + w.added_text)
    reflected = prompt + w.answer
    return {
        "vision": w.images * model.vision.per_image(),
        "answer_prefill": text.forward(prompt),
        "answer_decode": text.forward(w.answer, prompt) + text.lm_head(w.answer),
        "reflect_prefill": text.forward(w.reflect_prompt, reflected) if w.reflect_prompt else 0.0,
        "reflect_decode": text.forward(w.reflect, reflected + w.reflect_prompt) + text.lm_head(w.reflect),
        "key_encoder": key_encoder.forward(w.key_text, causal=False) if w.key_text else 0.0,
    }


def _english_tokens(text: str) -> int:
    """Tokens of ``text`` in MiniLM's WordPiece tokenizer (the English subword proxy used throughout)."""
    from ..encoders.text import _load

    return len(_load("cpu").tokenizer(text, add_special_tokens=False)["input_ids"])


def workloads(bench: dict[str, Any]) -> dict[str, Workload]:
    """Every defense row's workload from an overhead bench JSON: the rows it measured (Base, EchoSafe at each batch
    size and staleness), and EchoSafe's ablations derived from EchoSafe's counts by what each setting removes."""
    from ..defenses import echosafe_prompts as prompts

    counts, rows = bench["counts"], bench["models"]
    scale = counts["question_minilm_tokens"] / counts["question_tiny_tokens"]
    vision_tiny = counts["images_per_item"] * counts["tiny_vision_tokens_per_image"]
    base = rows["Base"]["per_item"]
    out = {
        "Base": Workload(
            counts["images_per_item"], (base["answer_prompt_tokens"] - vision_tiny) * scale, 0.0, base["answer_tokens"]
        )
    }
    for label, row in rows.items():
        if "parts_mean_s" not in row or label.endswith("/no-prefetch"):  # a timing variant: the same tokens
            continue
        p = row["per_item"]
        out[label] = replace(
            out["Base"],
            added_text=(p["answer_prompt_tokens"] - base["answer_prompt_tokens"]) * scale,
            answer=p["answer_tokens"],
            reflect_prompt=counts["reflect_template_tiny_tokens"] * scale,
            reflect=p["follow_up_tokens"] * scale,
            key_text=counts["question_minilm_tokens"],
        )
    echo = out["EchoSafe"]
    instruction = _english_tokens(prompts.SAFETY_INSTRUCTION.format(question="")) - _english_tokens(
        prompts.NO_INSTRUCTION.format(question="")
    )
    insights = max(0.0, echo.added_text - instruction)  # k = 5 insights and their header, per item on average
    out["EchoSafe-NoRetrieval"] = replace(echo, added_text=instruction, reflect_prompt=0, reflect=0, key_text=0)
    out["EchoSafe-NoReflection"] = replace(echo, reflect_prompt=0, reflect=0)  # ASSUMED: exchanges as long as insights
    out["EchoSafe-RandomMemory"] = out["EchoSafe-NoTwinGuard"] = echo
    out["EchoSafe-NoSafetyInstruction"] = replace(echo, added_text=insights)
    for k in (1, 3, 10):
        out[f"EchoSafe-k{k}"] = replace(echo, added_text=instruction + insights * k / 5)
    return out


# ASSUMED lengths of the baselines' short generations (the tiny model's are random; no real model runs here)
ECSO_CHECK_TOKENS = 2  # the self-check's "No" / "Yes" and its end of turn
ECSO_CAPTION_TOKENS = 128  # a query-aware caption of one image


# ASSUMED lengths of the auxiliary models' outputs and ETA's search (no real guard or search runs here)
GUARD_VERDICT_TOKENS = {"llama-guard": 2, "qwen3guard": 12}  # "safe" + end of turn; "Safety: Safe\nCategories:
# None" (and "Refusal: No" for an exchange) + end of turn
ETA_SENTENCE_TOKENS = 25  # a sampled sentence (the search cuts one at a sentence end, at most `sentence_tokens`)
REWARD_TEMPLATE_TOKENS = 10  # Llama-3's chat-template tokens around the reward model's two turns


def baseline_flops(model: Model, key_encoder: Transformer, base: Workload) -> dict[str, float]:
    """FLOPs per item of the baselines (``base``: Base's workload with the question's key-encoder tokens):

    - SafetyPrompt, FigStep, AdaShield-S: one answer with their prompt added (AdaShield-S repeats the question
      for LLaVA-family models, its ``auto`` placement).
    - CoCA (defenses/coca.py): every step decodes two rows, the prompt without and with the principle.

    - ECSO (defenses/ecso.py): the answer, then a fresh request with the image asking whether the answer was
      harmful (the question and the whole answer in its prompt); an item flagged harmful adds a caption request
      with the image and a text-only answer from the caption. A run's cost is (1 - f) * unflagged + f * flagged,
      f its flag rate (the defense trace's ``branch``).
    - AdaShield-A (defenses/adashield_a.py): the key (MiniLM over the question; the image part is the inner
      model's vision pass, reused by the answer, as for EchoSafe), then the answer with the best pool prompt
      prepended when its similarity exceeds ``beta`` (the seed pool's mean prompt length), or the bare question.
    Prompt texts are counted in MiniLM's tokenizer, as EchoSafe's instruction is."""
    from ..defenses import adashield_a, coca, ecso, prompts

    answer = request_flops(model, base.images, base.prompt_text, base.answer)
    check = request_flops(
        model, base.images, base.prompt_text + _template_tokens(ecso.HARM_CHECK) + base.answer, ECSO_CHECK_TOKENS
    )
    caption = request_flops(model, base.images, base.prompt_text + _template_tokens(ecso.CAPTION), ECSO_CAPTION_TOKENS)
    hinted = request_flops(
        model, 0, base.prompt_text + _template_tokens(ecso.HINT_ANSWER) + ECSO_CAPTION_TOKENS, base.answer
    )
    key = key_encoder.forward(base.key_text, causal=False)
    pool = adashield_a.load_pool(adashield_a.SEED_POOL)
    shield = sum(_english_tokens(e.prompt) + 1 for e in pool) / len(pool)  # + the separator
    shielded = sum(item_flops(model, key_encoder, replace(base, added_text=shield, key_text=base.key_text)).values())
    prompt_only = {
        "SafetyPrompt": prompts.SAFETY_PROMPT,
        "FigStep": prompts.FIGSTEP_PROMPT,  # FigStep's image is a typographic render: the same image tokens
        "AdaShield-S": prompts.ADASHIELD_S_PROMPT,
    }
    added = {row: _english_tokens(text) + 1 for row, text in prompt_only.items()}  # + the separator
    if model.name.startswith("LLaVA"):  # placement auto: query + shield + query for the LLaVA family
        added["AdaShield-S"] += base.key_text + 1
    principle = _english_tokens(coca.PRINCIPLE) + 1
    return {
        **{row: request_flops(model, base.images, base.prompt_text + n, base.answer) for row, n in added.items()},
        # two passes per step, without and with the principle, each a full request (image included)
        "CoCA": answer + request_flops(model, base.images, base.prompt_text + principle, base.answer),
        "ECSO (no item flagged)": answer + check,
        "ECSO (every item flagged)": answer + check + caption + hinted,
        "AdaShield-A (no prompt applied)": answer + key,
        "AdaShield-A (prompt applied to every item)": shielded,
    }


def _template_tokens(template: str) -> int:
    """A prompt template's own tokens, its ``{fields}`` left empty (they are counted by role)."""
    import string

    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    return _english_tokens(template.format(**dict.fromkeys(names, "")))


def _guard_policy_tokens() -> int:
    """Llama Guard's documented prompt around the conversation (task, categories, output instruction), counted as
    the tiny twins lay it out (:mod:`..models.tiny_guards`) without the turn headers."""
    import jinja2

    from ..models import tiny_guards

    template = tiny_guards._LLAMA_GUARD_TEMPLATE
    for marker in ("HEADER_OPEN", "HEADER_CLOSE", "IMAGE_TOKEN"):
        template = template.replace(marker, "")
    rendered = jinja2.Template(template).render(messages=[{"role": "user", "content": ""}], add_generation_prompt=True)
    return _english_tokens(rendered)


def guard_flops(inner: Model, guard: Model, settings: Any, base: Workload) -> dict[str, float]:
    """GuardFilter per item at both ends of its branch (defenses/guard_filter.py): nothing flagged (the input check,
    the answer, the output check) and every request blocked at the input check. Each check is one fresh request
    to the guard: its policy prompt around the conversation (the request; then the request and the answer), the
    item's images when the guard is shown them, and a short verdict; a ``threshold`` adds a scoring pass over the
    prompt. ASSUMED: Qwen3Guard's policy prompt is as long as Llama Guard's (its real template ships with the
    checkpoint), the verdict lengths of ``GUARD_VERDICT_TOKENS``."""
    spec = settings.spec()
    shown = base.images if spec.images else 0
    policy, verdict = _guard_policy_tokens(), GUARD_VERDICT_TOKENS[spec.format]

    def check(text: float) -> float:
        scoring = request_flops(guard, shown, policy + text, 0) if settings.threshold is not None else 0.0
        return request_flops(guard, shown, policy + text, verdict) + scoring

    check_in = check(base.prompt_text) if settings.input_check else 0.0
    check_out = check(base.prompt_text + base.answer) if settings.output_check else 0.0
    ends = {"nothing flagged": check_in + request_flops(inner, base.images, base.prompt_text, base.answer) + check_out}
    if settings.input_check:
        ends["every request blocked"] = check_in
    return ends


def eta_flops(inner: Model, reward: Model, clip: Model, settings: Any, base: Workload) -> dict[str, float]:
    """ETA per item at both ends of its branch (defenses/eta.py, models/eta_search.py): no answer flagged (the
    answer and the reward model's score of it) and every answer aligned (also CLIP's pre-generation check and the
    sentence-level best-of-N search). The search as this plugin runs it: the request (image included) is prefilled
    once and its KV cache kept; per sentence, ``best_of_n`` candidate rows each read the kept text after the cached
    request and sample a sentence (each row also re-reads the request's last token: one token, left out); the
    reward model scores
    each row's answer so far; from the second sentence CLIP scores the candidates against the image (one image
    pass per call). ASSUMED: the aligned answer is as long as the plain one, in sentences of
    ``ETA_SENTENCE_TOKENS``; the reward model's chat template adds ``REWARD_TEMPLATE_TOKENS``."""
    import math

    s, sentence = settings, ETA_SENTENCE_TOKENS
    answer = request_flops(inner, base.images, base.prompt_text, base.answer)
    post = reward.text.forward(_english_tokens(s.rm_prompt) + REWARD_TEMPLATE_TOKENS + base.answer)
    clip_text = min(sentence + 2, 77)  # + start and end tokens; CLIP truncates at 77 positions
    image = clip.vision.per_image() if clip.vision else 0.0  # CLIP's image tower, then its pooled projection
    pre = base.images * (image + clip.text.forward(_english_tokens(s.clip_prompt) + 2))
    search_rm = _english_tokens(s.search_rm_prompt) + REWARD_TEMPLATE_TOKENS
    kept, search = float(_english_tokens(s.safety_prefix)), request_flops(inner, base.images, base.prompt_text, 0)
    prompt = inner.prompt_positions(base.images, base.prompt_text)
    for index in range(math.ceil(base.answer / sentence)):
        search += s.best_of_n * continue_flops(inner, base.images, prompt, kept, sentence)
        search += s.best_of_n * reward.text.forward(search_rm + kept + sentence)
        if index and base.images:
            search += image + s.best_of_n * clip.text.forward(clip_text)
        kept += sentence
    return {"no answer flagged": answer + post, "every answer aligned": answer + post + pre + search}


def aux_rows(aux: dict[str, Model]) -> tuple[dict[str, Callable[[Model, Workload], dict[str, float]]], dict[str, str]]:
    """({registered row: its FLOPs per item by branch end, as a function of the inner model and Base's workload},
    {registered row: why not computed}) for every registered defense that runs an auxiliary model, from its
    settings in ``wrappers/defenses.yaml`` and the ``aux_models`` shapes; read once per table."""
    from ..catalog import defense_entries
    from ..defenses.eta import ETASettings
    from ..defenses.guard_filter import GuardFilterSettings

    rows: dict[str, Callable[[Model, Workload], dict[str, float]]] = {}
    missing: dict[str, str] = {}
    for name, entry in defense_entries()[0].items():
        if entry["class"] == "GuardFilter":
            settings: Any = GuardFilterSettings(**entry["settings"])
            needed, estimate = [settings.spec().model_path], guard_flops
        elif entry["class"] == "ETA":
            settings = ETASettings(**entry["settings"])
            needed, estimate = [settings.reward_model, settings.clip_model], eta_flops
        else:
            continue
        absent = [m for m in needed if m not in aux]
        if absent:
            missing[name] = f"no shapes for {', '.join(map(str, absent))} under aux_models in {SHAPES_FILE}"
            continue
        models = [aux[m] for m in needed]
        rows[name] = lambda inner, base, f=estimate, m=models, s=settings: f(inner, *m, s, base)
    return rows, missing


def flops_table(bench: dict[str, Any], shapes: Path | None = None) -> dict[str, dict[str, float]]:
    """``{row: {model: FLOPs per item / Base's}}`` at every real shape."""
    models, encoder = load_shapes(shapes)
    aux, _ = aux_rows(load_aux(shapes))
    loads = workloads(bench)
    key_text = bench["counts"]["question_minilm_tokens"]
    table: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        base = sum(item_flops(model, encoder, loads["Base"]).values())
        for row, w in loads.items():
            table.setdefault(row, {})[name] = sum(item_flops(model, encoder, w).values()) / base
        for row, flops in baseline_flops(model, encoder, replace(loads["Base"], key_text=key_text)).items():
            table.setdefault(row, {})[name] = flops / base
        for row, estimate in aux.items():
            for end, flops in estimate(model, loads["Base"]).items():
                table.setdefault(f"{row} ({end})", {})[name] = flops / base
    return table


def not_computed(shapes: Path | None = None) -> dict[str, str]:
    """Registered rows the table leaves out, and why (an auxiliary model without shapes)."""
    return aux_rows(load_aux(shapes))[1]


def markdown(table: dict[str, dict[str, float]], shapes: Path | None = None) -> str:
    names = list(next(iter(table.values())))
    lines = [
        "FLOPs vs Base per item (ESTIMATE; paper: EchoSafe 1.69x)",
        "",
        "| row | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    lines += [f"| {row} | " + " | ".join(f"{r[n]:.3f}" for n in names) + " |" for row, r in table.items()]
    lines += [
        "",
        "ECSO, AdaShield-A, GuardFilter and ETA at both ends of their branch (a run's cost lies between, by its "
        "flag / apply rate).",
        f"ASSUMED: ECSO's self-check replies in {ECSO_CHECK_TOKENS} tokens, its caption runs {ECSO_CAPTION_TOKENS}; "
        "the guards' verdicts run "
        + ", ".join(f"{n} tokens ({fmt})" for fmt, n in GUARD_VERDICT_TOKENS.items())
        + f"; ETA's aligned answer is as long as the plain one, in "
        f"sentences of {ETA_SENTENCE_TOKENS} tokens; auxiliary shapes and their sources: {SHAPES_FILE} (aux_models).",
        *(f"{row}: not computed ({why})." for row, why in not_computed(shapes).items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="FLOPs vs Base per defense row at the real model shapes (estimate)")
    ap.add_argument("bench", help="an overhead bench JSON (benchmarks/bench_overhead.py --answer-tokens N)")
    ap.add_argument("--shapes", type=Path, default=None, help=f"default: the packaged {SHAPES_FILE}")
    args = ap.parse_args(argv)
    bench = json.loads(Path(args.bench).read_text())
    if "counts" not in bench:
        raise SystemExit(f"{args.bench}: no `counts` block; rerun benchmarks/bench_overhead.py to write one")
    print(markdown(flops_table(bench, args.shapes), args.shapes))


if __name__ == "__main__":
    main()
