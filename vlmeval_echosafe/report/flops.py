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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..paths import config_file

SHAPES_FILE = "task_configs/model_shapes.yaml"
PAPER_FLOPS_RATIO = 1.69  # the paper's EchoSafe FLOPs over the bare model


@dataclass(frozen=True)
class Transformer:
    """One transformer stack (decoder or encoder) by its shape."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    mlp: str  # "gated" (gate, up, down) or "plain" (fc1, fc2)

    @property
    def params(self) -> int:
        """Matrix-multiply parameters: q, k, v, o and the MLP of every layer (norms and biases left out)."""
        q = self.heads * self.head_dim
        attention = self.hidden * q + 2 * self.hidden * self.kv_heads * self.head_dim + q * self.hidden
        mlp = (3 if self.mlp == "gated" else 2) * self.hidden * self.intermediate
        return self.layers * (attention + mlp)

    def forward(self, new: float, cached: float = 0.0, causal: bool = True) -> float:
        """FLOPs of one pass over ``new`` tokens after ``cached`` positions (causal), or over ``new`` tokens that all
        see each other (bidirectional)."""
        attended = new * cached + new * (new + 1) / 2 if causal else new * new
        return 2 * self.params * new + 2 * self.layers * attended * self.heads * self.head_dim

    def lm_head(self, generated: float) -> float:
        return 2 * self.hidden * self.vocab * generated


@dataclass(frozen=True)
class Vision:
    """A ViT run once per image over ``patches_per_image`` positions; the LM reads ``tokens_per_image``."""

    layers: int
    hidden: int
    intermediate: int
    mlp: str
    patches_per_image: int
    tokens_per_image: int
    projector_params: int

    def per_image(self) -> float:
        per_layer = 4 * self.hidden**2 + (3 if self.mlp == "gated" else 2) * self.hidden * self.intermediate
        n = self.patches_per_image
        tower = 2 * self.layers * per_layer * n + 2 * self.layers * n * n * self.hidden
        return tower + 2 * self.projector_params * self.tokens_per_image


@dataclass(frozen=True)
class Model:
    name: str
    text: Transformer
    vision: Vision


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


def load_shapes(path: Path | None = None) -> tuple[dict[str, Model], Transformer]:
    """(models by name, the key encoder) from the shapes YAML."""
    raw = yaml.safe_load((path or config_file(SHAPES_FILE)).read_text())
    models = {
        name: Model(name, Transformer(**spec["text"]), Vision(**spec["vision"])) for name, spec in raw["models"].items()
    }
    (encoder,) = raw["key_encoder"].values()
    return models, Transformer(**encoder)


def item_flops(model: Model, key_encoder: Transformer, w: Workload) -> dict[str, float]:
    """FLOPs of one item by phase."""
    text = model.text
    prompt = w.images * model.vision.tokens_per_image + w.prompt_text + w.added_text
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
        if "parts_mean_s" not in row:
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


NOT_COMPUTED = {
    "ECSO": "its calls (answer, self-check, caption, text-only answer when flagged) are not counted per call yet",
    "AdaShield-A": "its shield prompt's tokens per item are not counted yet",
}


def flops_table(bench: dict[str, Any], shapes: Path | None = None) -> dict[str, dict[str, float]]:
    """``{row: {model: FLOPs per item / Base's}}`` at every real shape."""
    models, encoder = load_shapes(shapes)
    loads = workloads(bench)
    table: dict[str, dict[str, float]] = {}
    for row, w in loads.items():
        table[row] = {}
        for name, model in models.items():
            base = sum(item_flops(model, encoder, loads["Base"]).values())
            table[row][name] = sum(item_flops(model, encoder, w).values()) / base
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(table.values())))
    lines = [
        "FLOPs vs Base per item (ESTIMATE; paper: EchoSafe 1.69x)",
        "",
        "| row | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    lines += [f"| {row} | " + " | ".join(f"{r[n]:.3f}" for n in names) + " |" for row, r in table.items()]
    lines += [f"| {row} | " + " | ".join("n/a" for _ in names) + f" |  ({why})" for row, why in NOT_COMPUTED.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="FLOPs vs Base per defense row at the real model shapes (estimate)")
    ap.add_argument("bench", help="an overhead bench JSON (benchmarks/bench_overhead.py --answer-tokens N)")
    ap.add_argument("--shapes", type=Path, default=None, help=f"default: the packaged {SHAPES_FILE}")
    args = ap.parse_args(argv)
    bench = json.loads(Path(args.bench).read_text())
    if "counts" not in bench:
        raise SystemExit(f"{args.bench}: no `counts` block; rerun benchmarks/bench_overhead.py to write one")
    print(markdown(flops_table(bench, args.shapes)))


if __name__ == "__main__":
    main()
