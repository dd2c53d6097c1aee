"""Any VLMEvalKit model name (the plugin's backends, every defense wrapper, the host's own models) as an lmms-eval
simple model.

The wrapped model is built exactly as VLMEvalKit builds it (``register()`` then ``supported_VLM[name]()``) and is
called exactly as VLMEvalKit calls it: ``set_dump_image`` with a dataset-like object, then
``generate(message, dataset=<name>)`` with the image written to ``<img_root>/<index>.png``. Like the launcher's
runner under VLMEvalKit, the adapter hands a model with a ``begin`` method each task's rows first: every message it
builds is registered with its doc's row (:class:`TaskRows`), so a defense gets the pair id and category of each
item as it does under VLMEvalKit; ``close`` follows the last request. Generation settings are the wrapped model's
own (``wrappers/models.yaml``); lmms-eval's ``generation_kwargs`` are not applied, so both harnesses decode the
same way.
"""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from ..datasets import order
from ..defenses.rows import INDEX_ONLY, META, DatasetRun, PromptRows

log = logging.getLogger(__name__)


class TaskRows:
    """The slice of VLMEvalKit's dataset interface a model uses, for one lmms-eval task split, and the registry of
    the messages built from its docs."""

    meta_only = False

    def __init__(self, task: str, split: str, docs: Any, img_root: Path) -> None:
        names = getattr(docs, "column_names", [])
        # MM-SafetyBench++ docs carry the row's pair id and labels; any other task gives a defense the doc's index
        fields = META if "pair_id" in names else INDEX_ONLY
        columns = [c for c in fields if c in names]
        data = docs.select_columns(columns).to_pandas() if columns else pd.DataFrame(index=range(len(docs)))
        if "index" not in data.columns:  # a task without the plugin's schema: the doc id is the row index
            data.insert(0, "index", range(len(data)))
        first = docs[0] if len(docs) else {}
        self.dataset_name = str(first.get("dataset") or task)  # MM-SafetyBench++ docs carry the VLMEvalKit name
        self.stream_order = order.requested()  # the docs were built in this order (lmms/task.py)
        self.data = data.assign(index=data["index"].astype(str))
        self.img_root = str(img_root / self.dataset_name)
        self.prompt_rows = PromptRows(self.dataset_name, fields)

    def run(self) -> DatasetRun:
        """The hand-off to a model: lmms-eval keeps no checkpoint of a model's answers that the adapter could read,
        so every run starts the stream afresh (no rows finished)."""
        return DatasetRun(self.dataset_name, self.prompt_rows, self.stream_order, done=frozenset())

    def dump_image(self, line: Any) -> list[str]:  # the host's signature; the adapter writes images itself
        return [str(Path(self.img_root) / f"{line['index']}.png")]

    def message(self, doc_id: int, visuals: list[Any], context: str) -> list[dict[str, str]]:
        """The doc's message, registered with its row: its images saved where VLMEvalKit would,
        ``<img_root>/<index>.png`` (``_<j>`` from the second on), then the context."""
        row = self.data.iloc[doc_id]
        Path(self.img_root).mkdir(parents=True, exist_ok=True)
        paths = []
        for j, image in enumerate(visuals):
            path = Path(self.img_root) / (f"{row['index']}.png" if j == 0 else f"{row['index']}_{j}.png")
            (image if image.mode in ("RGB", "L") else image.convert("RGB")).save(path)
            paths.append(str(path))
        message = [*(dict(type="image", value=p) for p in paths), dict(type="text", value=context)]
        self.prompt_rows.register(message, row)
        return message


class VLMEvalKitModel(lmms):
    """``--model vlmeval_echosafe --model_args name=<registry name>[,work_dir=...,<setting>=<value>...]``.

    Extra model args go to the wrapped model: into a defense's ``settings``, or to a model's constructor.
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
        from ..launcher import HOST_ENV_DEFAULTS, restore_tls_verification

        for (
            key,
            value,
        ) in HOST_ENV_DEFAULTS.items():  # as the VLMEvalKit launcher does, before vlmeval is imported
            os.environ.setdefault(key, value)
        from vlmeval.config import supported_VLM

        from ..registry import register

        restore_tls_verification()  # `import vlmeval` turns TLS verification off process-wide

        size = 1 if str(batch_size).startswith("auto") else str(batch_size)
        if not str(size).isdigit() or int(size) < 1:
            raise ValueError(f"{type(self).__name__}: batch_size={batch_size!r}; give a whole number >= 1")
        self.batch_size = int(size)
        register(work_dir=work_dir)
        if name not in supported_VLM:
            close = difflib.get_close_matches(name, list(supported_VLM), n=5)
            raise ValueError(
                f"unknown VLMEvalKit model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
            )
        factory = supported_VLM[name]
        if device is not None:
            overrides.setdefault("device", device)
        keywords = getattr(factory, "keywords", {})
        if overrides and "settings" in keywords:  # a defense: model args are its settings
            overrides = {"settings": {**keywords["settings"], **overrides}}
        self.name = name
        self.model = factory(**overrides)
        self.image_dir = Path(image_dir) if image_dir else Path(tempfile.mkdtemp(prefix="echosafe_lmms_"))
        self._rows: dict[tuple[str, str], TaskRows] = {}

    def _rows_for(self, task: str, split: str) -> TaskRows:
        key = (task, split)
        if key not in self._rows:
            rows = self._rows[key] = TaskRows(task, split, self.task_dict[task][split], self.image_dir)
            if callable(getattr(self.model, "begin", None)):
                self.model.begin(rows.run())
        return self._rows[key]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Requests in the order given (a stateful defense's stream order); with ``batch_size`` N > 1 and a model
        that decodes in batches, up to N consecutive requests of one task go in one call, as `run.py
        --batch-size N` does."""
        from ..batching import supports_batch

        size = self.batch_size if supports_batch(self.model) else 1
        answers: list[str] = []
        bar = tqdm(total=len(requests), desc=f"{self.name}", disable=self.rank != 0)
        chunk: list[list[dict[str, str]]] = []
        chunk_rows = None
        for request in requests:
            context, _gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            rows = self._rows_for(task, split)
            if chunk and (rows is not chunk_rows or len(chunk) == size):
                answers += self._answer(chunk, chunk_rows, size > 1)
                bar.update(len(chunk))
                chunk = []
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
            chunk.append(rows.message(doc_id, visuals, context))
            chunk_rows = rows
        if chunk:
            answers += self._answer(chunk, chunk_rows, size > 1)
            bar.update(len(chunk))
        flush = getattr(self.model, "flush", None)
        if size > 1 and callable(flush):  # a pipelined model's pending work (EchoSafe staleness: 1)
            flush()
        bar.close()
        if callable(getattr(self.model, "close", None)):
            self.model.close()  # the last request: EchoSafe compacts its banks
        return answers

    def _answer(self, messages: list[list[dict[str, str]]], rows: TaskRows, batched: bool) -> list[str]:
        self.model.set_dump_image(rows.dump_image)  # as VLMEvalKit does (a model's custom prompts dump through it)
        if not batched:
            return [self.model.generate(message=messages[0], dataset=rows.dataset_name)]
        return self.model.generate_batch(messages, dataset=rows.dataset_name)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(f"{type(self).__name__} wraps generative VLMEvalKit models: generate_until only")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} wraps generative VLMEvalKit models: generate_until only")


class EchoSafeModel(VLMEvalKitModel):
    """``--model echosafe --model_args inner=TinyQwen2VL[,k=5,reset=category,defense=EchoSafe-NoReflection]``:
    the ``<defense>_<inner>`` entry of wrappers/defenses.yaml, with any EchoSafe setting overridden."""

    def __init__(self, inner: str, defense: str = "EchoSafe", **kwargs: Any) -> None:
        super().__init__(name=f"{defense}_{inner}", **kwargs)
