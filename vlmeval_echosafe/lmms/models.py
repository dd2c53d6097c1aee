"""Any row of the plugin (a defense around any inner model, or a plugin model alone) as an lmms-eval simple model.

The row is built through the public API (:func:`~..api.load_defense`): for the plugin's own inner models no
VLMEvalKit import is on the path. Each request becomes an :class:`~..core.item.Item` straight from its lmms-eval
doc: the doc's images saved as ``<img_root>/<index>.png`` (``_<j>`` from the second on, as VLMEvalKit names
them), the context as the question, and the doc's row (pair id, category, mode, label for MM-SafetyBench++; the
doc index otherwise). Requests go through the core's one loop in micro-batches of ``batch_size`` consecutive
requests of one task, as ``run.py --batch-size`` does. Generation settings are the row's own
(``wrappers/models.yaml``); lmms-eval's ``generation_kwargs`` are not applied, so both harnesses decode the same.
"""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from ..core.item import ROW_FIELDS, Item, Response
from ..core.loop import answer_stream, micro_batch
from ..core.run import DatasetRun
from ..datasets import order

log = logging.getLogger(__name__)


class TaskRows:
    """One lmms-eval task split: its docs' rows (the plugin's schema where the docs carry it) and images."""

    def __init__(self, task: str, split: str, docs: Any, img_root: Path) -> None:
        names = getattr(docs, "column_names", [])
        # MM-SafetyBench++ docs carry the row's pair id and labels; any other task gives a defense the doc's index
        self.fields = ROW_FIELDS if "pair_id" in names else ("index",)
        columns = [c for c in self.fields if c in names]
        data = docs.select_columns(columns).to_pandas() if columns else pd.DataFrame(index=range(len(docs)))
        if "index" not in data.columns:  # a task without the plugin's schema: the doc id is the row index
            data.insert(0, "index", range(len(data)))
        first = docs[0] if len(docs) else {}
        self.dataset_name = str(first.get("dataset") or task)  # MM-SafetyBench++ docs carry the VLMEvalKit name
        self.stream_order = order.requested()  # the docs were built in this order (lmms/task.py)
        self.data = data.assign(index=data["index"].astype(str))
        self.img_root = img_root / self.dataset_name

    def run(self) -> DatasetRun:
        """The hand-off to a defense: lmms-eval keeps no checkpoint of a model's answers that the adapter could
        read, so every run starts the stream afresh (no rows finished)."""
        kind = "pairs" if "pair_id" in self.fields else "index"
        return DatasetRun(self.dataset_name, kind, self.stream_order, done=frozenset())

    def item(self, doc_id: int, visuals: list[Any], context: str) -> Item:
        """The doc as an item: its images saved where VLMEvalKit would, its row beside it."""
        row = self.data.iloc[doc_id]
        self.img_root.mkdir(parents=True, exist_ok=True)
        paths = []
        for j, image in enumerate(visuals):
            path = self.img_root / (f"{row['index']}.png" if j == 0 else f"{row['index']}_{j}.png")
            (image if image.mode in ("RGB", "L") else image.convert("RGB")).save(path)
            paths.append(str(path))
        meta = {k: (str(row[k]) if k == "index" else row[k]) for k in self.fields if k in row}
        return Item(context, tuple(paths), meta, self.dataset_name)


class VLMEvalKitModel(lmms):
    """``--model vlmeval_echosafe --model_args name=<row>[,work_dir=...,<setting>=<value>...]``.

    Extra model args are the row's settings (a defense's) or its model's constructor arguments (a model alone).
    """

    is_simple = True

    def __init__(
        self,
        name: str,
        work_dir: str = "outputs/lmms_eval",
        image_dir: str | None = None,
        batch_size: int | str = 1,
        device: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        from ..api import load_defense, row_names, takes_settings
        from ..catalog import resolve

        size = 1 if str(batch_size).startswith("auto") else str(batch_size)
        if not str(size).isdigit() or int(size) < 1:
            raise ValueError(f"{type(self).__name__}: batch_size={batch_size!r}; give a whole number >= 1")
        self.batch_size = int(size)
        row = resolve(name)
        model = {"device": device} if device is not None else {}
        if row.inner_spec is None:
            _check_host_name(name)
        if not takes_settings(row.defense):  # a model alone: the args are its constructor's
            model, overrides = {**model, **overrides}, {}
        try:
            self.defense = load_defense(name, work_dir=work_dir, model=model, **overrides)
        except KeyError as err:
            close = difflib.get_close_matches(name, row_names(), n=5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown row {name!r}{hint}") from err
        if self.defense.shares_stream and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError(
                f"{name} keeps one memory stream across ranks, which only run.py's step loop (torchrun) drives; "
                "run lmms-eval with one process"
            )
        self.name = name
        self.image_dir = Path(image_dir) if image_dir else Path(tempfile.mkdtemp(prefix="echosafe_lmms_"))
        self._rows: dict[tuple[str, str], TaskRows] = {}

    def _rows_for(self, task: str, split: str) -> TaskRows:
        key = (task, split)
        if key not in self._rows:
            rows = self._rows[key] = TaskRows(task, split, self.task_dict[task][split], self.image_dir)
            self.defense.begin(rows.run())
        return self._rows[key]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Requests in the order given (a stateful defense's stream order), up to ``batch_size`` consecutive
        requests of one task per micro-batch (1 for a defense that answers one item at a time)."""
        size = micro_batch(self.defense, self.batch_size)
        answers: list[str] = []
        bar = tqdm(total=len(requests), desc=f"{self.name}", disable=self.rank != 0)

        def batches() -> Iterator[list[Item]]:
            chunk: list[Item] = []
            for request in requests:
                context, _gen_kwargs, doc_to_visual, doc_id, task, split = request.args
                rows = self._rows_for(task, split)
                if chunk and (chunk[-1].dataset != rows.dataset_name or len(chunk) == size):
                    yield chunk
                    chunk = []
                visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
                chunk.append(rows.item(doc_id, visuals, context))
            if chunk:
                yield chunk

        def done(items: list[Item], responses: list[Response]) -> None:
            answers.extend(r.text for r in responses)
            bar.update(len(items))

        answer_stream(self.defense, batches(), done)
        bar.close()
        self.defense.close()  # the last request: EchoSafe compacts its banks
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(f"{type(self).__name__} wraps generative models: generate_until only")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} wraps generative models: generate_until only")


def _check_host_name(name: str) -> None:
    """A row around a model only VLMEvalKit knows: the host's environment defaults, then the name checked against
    its registry (with close names)."""
    from ..vlmevalkit.patches import HOST_ENV_DEFAULTS, restore_tls_verification

    for key, value in HOST_ENV_DEFAULTS.items():  # as the VLMEvalKit launcher does, before vlmeval is imported
        os.environ.setdefault(key, value)
    from vlmeval.config import supported_VLM

    from ..vlmevalkit.registry import register

    restore_tls_verification()  # `import vlmeval` turns TLS verification off process-wide
    register()
    if name not in supported_VLM:
        close = difflib.get_close_matches(name, list(supported_VLM), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown VLMEvalKit model {name!r}{hint}")


class EchoSafeModel(VLMEvalKitModel):
    """``--model echosafe --model_args inner=TinyQwen2VL[,k=5,reset=category,defense=EchoSafe-NoReflection]``:
    the ``<defense>_<inner>`` row of wrappers/defenses.yaml, with any EchoSafe setting overridden."""

    def __init__(self, inner: str, defense: str = "EchoSafe", **kwargs: Any) -> None:
        super().__init__(name=f"{defense}_{inner}", **kwargs)
