"""Report figures (matplotlib, Agg backend), each saved as PNG and SVG.

Every plotted number comes from the collected score table or an EchoSafe trace; nothing is recomputed from
predictions here.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .. import metrics  # noqa: E402
from ..datasets.schema import CATEGORIES  # noqa: E402
from .traces import rolling_rates  # noqa: E402

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "svg.fonttype": "none",
}
MODE_MARKERS = {"Gen": "o", "GenOCR": "s"}


def _save(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def run_label(row: pd.Series, with_dataset: bool) -> str:
    base = f"{row['model']} [{row['judge']}]"
    if row.get("order") not in (None, "", "file"):  # an EchoSafe run in a seeded stream order
        base = f"{base} ({row['order']})"
    return f"{base} {row['dataset']}" if with_dataset else base


def _ccr(row: pd.Series) -> str:
    """The row's CCR column: ``CCR``, or ``CCR_NonRefusal`` for a refusal-only judge."""
    return metrics.ccr_name(bool(row["refusal_only"]))


def _run_labels(board: pd.DataFrame) -> pd.Series:
    with_ds = board["dataset"].nunique() > 1
    return board.apply(run_label, axis=1, with_dataset=with_ds)


def _category_tick(cat: str) -> str:
    if cat == metrics.ALL:
        return "Mean over\ncategories"
    return CATEGORIES[cat][1].replace(" ", "\n") if cat in CATEGORIES else cat


def ccr_by_category(board: pd.DataFrame, out: Path) -> list[Path]:
    """Grouped bars: CCR per category (and the mean), one bar per run, one panel per mode; 95% CI whiskers."""
    board = board.assign(run=_run_labels(board) + ": " + board.apply(_ccr, axis=1))
    modes = list(dict.fromkeys(board["mode"]))
    cats = [c for c in CATEGORIES if c in set(board["category"])] + [metrics.ALL]
    runs = list(dict.fromkeys(board["run"]))
    width = 0.8 / max(1, len(runs))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            len(modes),
            1,
            figsize=(max(10, 1.5 * len(cats) + 0.3 * len(runs)), 3.8 * len(modes)),
            squeeze=False,
            layout="constrained",
        )
        for ax, mode in zip(axes[:, 0], modes, strict=False):
            sub = board[board["mode"] == mode].set_index(["run", "category"])
            x = np.arange(len(cats))
            for i, run in enumerate(runs):
                vals, lo, hi = [], [], []
                for cat in cats:
                    row = sub.loc[(run, cat)] if (run, cat) in sub.index else None
                    col = None if row is None else _ccr(row)
                    v = np.nan if row is None else float(row[col])
                    vals.append(v)
                    lo.append(
                        v - float(row[f"{col}_lo"]) if row is not None and pd.notna(row.get(f"{col}_lo")) else 0.0
                    )
                    hi.append(
                        float(row[f"{col}_hi"]) - v if row is not None and pd.notna(row.get(f"{col}_hi")) else 0.0
                    )
                bars = ax.bar(
                    x + (i - (len(runs) - 1) / 2) * width,
                    np.nan_to_num(vals),
                    width,
                    label=run,
                    yerr=[lo, hi],
                    capsize=2,
                    color=plt.cm.tab10(i % 10),
                    edgecolor="black",
                    linewidth=0.4,
                )
                if len(runs) <= 4:  # value labels stay legible only for a few bars per group
                    ax.bar_label(
                        bars,
                        labels=["n/a" if np.isnan(v) else f"{v:.0f}" for v in vals],
                        fontsize=7,
                        padding=1,
                    )
            ax.set_xticks(x, [_category_tick(c) for c in cats])
            ax.set_ylim(0, 105)
            ax.set_ylabel("CCR (%)" if not board["refusal_only"].any() else "CCR or CCR_NonRefusal (%)")
            ax.set_title(f"CCR per category, {mode} images (rule judge: CCR_NonRefusal, not the paper's CCR)")
            ax.axvline(len(cats) - 1.5, color="grey", linewidth=0.8, linestyle=":")
            ax.grid(axis="y", alpha=0.3)
        fig.legend(
            *axes[0, 0].get_legend_handles_labels(),
            loc="outside lower center",
            ncol=min(3, len(runs)),
            frameon=False,
        )
        return _save(fig, out, "ccr_by_category")


def over_defense_map(board: pd.DataFrame, out: Path) -> list[Path]:
    """RR on unsafe items vs AR on safe items (NonRefusalRate for the rule judge; mean over categories) with
    iso-CCR curves.

    Top-right is ideal; bottom-right under-refuses (answers everything), top-left over-defends.
    """
    means = board[board["category"] == metrics.ALL].assign(run=_run_labels(board[board["category"] == metrics.ALL]))
    runs = list(dict.fromkeys(means["run"]))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 6.2))
        ar = np.linspace(0.5, 100, 400)
        for c in (20, 40, 60, 80, 90):
            with np.errstate(divide="ignore", invalid="ignore"):
                rr = c * ar / (2 * ar - c)
            ok = (ar > c / 2) & (rr <= 100) & (rr >= 0)
            ax.plot(ar[ok], rr[ok], color="grey", linewidth=0.8, linestyle="--")
            ax.annotate(
                f"CCR {c}",
                (100, c * 100 / (200 - c)),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize=8,
                color="grey",
                va="center",
            )
        for i, run in enumerate(runs):
            sub = means[means["run"] == run]
            for _, r in sub.iterrows():
                # Later runs are drawn smaller, so runs at the same point stay visible as nested markers.
                safe = metrics.safe_rate_name(bool(r["refusal_only"]))
                ax.scatter(
                    r[safe],
                    r["RR"],
                    s=220 - 150 * i / max(1, len(runs) - 1),
                    color=plt.cm.tab10(i % 10),
                    edgecolor="black",
                    marker=MODE_MARKERS.get(r["mode"], "D"),
                    label=f"{run}, {r['mode']}" + (f" (x: {safe})" if safe != "AR" else ""),
                    zorder=3,
                )
        ax.set_xlim(-2, 112)
        ax.set_ylim(-2, 102)
        ax.set_xlabel(
            "AR: answer rate on safe items (%)"
            if not means["refusal_only"].any()
            else "safe items: AR (LLM judge) or NonRefusalRate (rule judge), %"
        )
        ax.set_ylabel("RR: refusal rate on unsafe items (%)")
        ax.set_title("Over-defense map (mean over categories)")
        ax.text(2, 97, "over-defense\n(refuses safe twins)", fontsize=8, va="top", color="dimgrey")
        ax.text(80, 3, "under-defense\n(answers unsafe)", fontsize=8, ha="right", color="dimgrey")
        ax.grid(alpha=0.2)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _save(fig, out, "over_defense_map")


def memory_growth(
    trace: pd.DataFrame,
    joined: dict[str, tuple[pd.DataFrame, bool]],
    title: str,
    out: Path,
    name: str,
    window: int = 20,
) -> list[Path]:
    """Per item in stream order: bank size, retrieval share, top-1 similarity, rolling RR / AR (NonRefusalRate
    for a refusal-only judge) per judge; ``joined`` maps a judge label to (decisions joined to the trace,
    refusal_only)."""
    x = trace["order"].to_numpy()
    resets = trace.index[trace["stream"] != trace["stream"].shift()].tolist()[1:]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
        axes[0].step(x, trace["bank_size"], where="post", color="tab:blue")
        axes[0].set_ylabel("bank size\n(insights)")
        retrieved = (trace["n_retrieved"] > 0).astype(float) * 100
        axes[1].plot(x, retrieved.rolling(window, min_periods=1).mean(), color="tab:green")
        axes[1].set_ylabel(f"% items with\nretrieval (last {window})")
        axes[1].set_ylim(-3, 103)
        axes[2].scatter(x, trace["top1_similarity"], s=8, color="tab:grey", alpha=0.5, label="per item")
        axes[2].plot(
            x,
            trace["top1_similarity"].rolling(window, min_periods=1).mean(),
            color="tab:purple",
            label=f"mean of last {window}",
        )
        axes[2].set_ylabel("top-1 cosine\nsimilarity")
        axes[2].legend(loc="lower right", frameon=False)
        for i, (judge, (frame, refusal_only)) in enumerate(joined.items()):
            rates = rolling_rates(frame, window, refusal_only)
            safe = metrics.safe_rate_name(refusal_only)
            axes[3].plot(rates.index, rates["RR"].ffill(), color=plt.cm.tab10(2 * i % 10), label=f"RR [{judge}]")
            axes[3].plot(
                rates.index,
                rates[safe].ffill(),
                color=plt.cm.tab10((2 * i + 1) % 10),
                linestyle="--",
                label=f"{safe} [{judge}]",
            )
        axes[3].set_ylabel(f"rolling rate (%)\nlast {window} per label")
        axes[3].set_ylim(-3, 103)
        if joined:
            axes[3].legend(loc="lower right", frameon=False)
        else:
            axes[3].text(0.5, 0.5, "no judged items file for this run", transform=axes[3].transAxes, ha="center")
        axes[3].set_xlabel("item in stream order")
        for ax in axes:
            ax.grid(alpha=0.25)
            for r in resets:
                ax.axvline(x[r], color="grey", linestyle=":", linewidth=0.8)
        axes[0].set_title(f"EchoSafe memory over the stream: {title}" + ("  (dotted: bank reset)" if resets else ""))
        return _save(fig, out, name)


def similarity_histogram(trace: pd.DataFrame, title: str, out: Path, name: str) -> list[Path]:
    """Top-1 retrieval similarity of safe vs unsafe queries (items with at least one retrieved insight)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        sims = trace["top1_similarity"].dropna()
        low = float(np.floor(min(sims.min(), 0.95) * 20) / 20) if len(sims) else 0.0
        bins = np.linspace(low, 1.0, int(round((1.0 - low) * 40)) + 1)
        groups = [trace.loc[trace["label"] == lab, "top1_similarity"].dropna() for lab in ("unsafe", "safe")]
        ax.hist(
            groups,
            bins=bins,
            color=["tab:red", "tab:blue"],
            edgecolor="black",
            linewidth=0.3,
            label=[f"{lab} queries (n={len(g)})" for lab, g in zip(("unsafe", "safe"), groups, strict=False)],
        )
        ax.set_xlabel("top-1 cosine similarity to the bank")
        ax.set_ylabel("items")
        ax.set_title(f"Retrieval similarity, safe vs unsafe: {title}")
        ax.legend(frameon=False)
        ax.grid(alpha=0.25)
        return _save(fig, out, name)
