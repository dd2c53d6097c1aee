"""What the launcher hands a model around VLMEvalKit's `infer_data`, which gives a model only the messages.

The host calls ``infer_data(model, model_name, work_dir, dataset, out_file, ...)`` once per model × dataset and
rank (from ``infer_data_job``). :func:`install` wraps it (the host's loop, or the batched one the launcher put in
its place) so that, before the first item, a model with a ``begin`` method gets a
:class:`~.defenses.rows.DatasetRun`:

- the dataset's prompt registry: MM-SafetyBench++ registers every prompt it builds with its row; for the host's
  own datasets the runner registers the index of each prompt the dataset builds (they carry no pair ids);
- the stream order the dataset was built in;
- the rows the host will skip: the keys of exactly the two files ``infer_data`` itself reads, the
  ``<work_dir>/<model>_<dataset>_PREV.pkl`` that ``infer_data_job`` writes from an earlier prediction file, and
  ``out_file``, this rank's checkpoint (:func:`checkpoint_files`); under torchrun, for a model whose ranks share
  one stream (EchoSafe), every rank's checkpoint, as the launcher's step loop reads them (`batching.py`);
- every row's metadata in run order.

After the host's loop returns, the model's ``close`` ends the run (EchoSafe compacts its banks). Under
``--api-mode`` the host's pipeline builds a dataset's prompts in ``APIEvalPipeline._produce_image_tasks``, given
the rows it already has: :func:`install_api` hands a model the same before it does (stateful defenses are refused
in that mode, so there is nothing to close).
"""

from __future__ import annotations

import os.path as osp
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .datasets import order
from .defenses.rows import INDEX_ONLY, DatasetRun, PromptRows


def checkpoint_files(work_dir: str | Path, model_name: str, dataset_name: str, out_file: str | Path) -> list[Path]:
    """The files whose keys ``infer_data(model, model_name, work_dir, dataset, out_file)`` skips, in the order it
    reads them (vlmeval/inference.py: ``prev_file``, then ``out_file``)."""
    return [Path(f"{work_dir}/{model_name}_{dataset_name}_PREV.pkl"), Path(out_file)]


def rank_checkpoint(work_dir: str | Path, dataset_name: str) -> Path:
    """The ``out_file`` ``infer_data_job`` passes this rank (its ``tmpl``), for checks made before the host runs."""
    from vlmeval.smp import get_rank_and_world_size

    rank, world = get_rank_and_world_size()
    return Path(osp.join(str(work_dir), f"{rank}{world}_{dataset_name}.pkl"))


def rank_checkpoints(work_dir: str | Path, dataset_name: str) -> list[Path]:
    """Every rank's ``out_file`` (``infer_data_job``'s ``tmpl`` for ranks 0 … W-1): the ranks of a shared stream
    all hold whole global steps, and a resumed stream continues from what any of them finished."""
    from vlmeval.smp import get_rank_and_world_size

    _, world = get_rank_and_world_size()
    return [Path(osp.join(str(work_dir), f"{r}{world}_{dataset_name}.pkl")) for r in range(world)]


def predictions(files: list[Path]) -> dict[Any, Any]:
    """The predictions held by the files that exist, later files winning (as ``infer_data`` reads them)."""
    from vlmeval.smp import load

    out: dict[Any, Any] = {}
    for f in files:
        if f.exists():
            out.update(load(str(f)))
    return out


def finished(files: list[Path]) -> frozenset[str]:
    """Row indices (as strings) held by the files that exist."""
    return frozenset(str(k) for k in predictions(files))


@contextmanager
def registered_prompts(dataset: Any) -> Iterator[PromptRows]:
    """The dataset's own prompt registry, or, for a dataset without one (the host's), a registry of the row index
    of every prompt its ``build_prompt`` returns while the block runs."""
    own = getattr(dataset, "prompt_rows", None)
    if isinstance(own, PromptRows):
        yield own
        return
    rows = PromptRows(dataset.dataset_name, INDEX_ONLY)
    build = dataset.build_prompt
    own_attribute = vars(dataset).get("build_prompt")  # normally none: the class's method

    def build_prompt(line: Any, *args: Any, **kwargs: Any) -> Any:
        message = build(line, *args, **kwargs)
        rows.register(message, dataset.data.iloc[line] if isinstance(line, int) else line)
        return message

    dataset.build_prompt = build_prompt
    try:
        yield rows
    finally:
        if own_attribute is None:
            del dataset.build_prompt  # the class's method again
        else:
            dataset.build_prompt = own_attribute


def wrap(infer_data: Callable[..., Any]) -> Callable[..., Any]:
    """``infer_data`` with the hand-off before and ``close`` after (same arguments, same files)."""

    def run(model: Any, model_name: str, work_dir: str, dataset: Any, out_file: str, **kwargs: Any) -> Any:
        from vlmeval.smp import get_rank_and_world_size

        from .batching import build_model, shares_stream

        def host(model: Any) -> Any:
            return infer_data(
                model=model, model_name=model_name, work_dir=work_dir, dataset=dataset, out_file=out_file, **kwargs
            )

        files = checkpoint_files(work_dir, model_name, dataset.dataset_name, out_file)
        rank, world = get_rank_and_world_size()
        if world > 1 and shares_stream(model, model_name):  # one stream in global steps over all rows
            files = [files[0], *rank_checkpoints(work_dir, dataset.dataset_name)]
            mine = dataset.data["index"]
        else:
            mine = dataset.data["index"].iloc[list(range(rank, len(dataset), world))]
        done = finished(files)
        if all(str(i) in done for i in mine):  # the host returns without building the model
            return host(model)
        model = build_model(model, model_name, kwargs.get("use_vllm", False))
        if not callable(getattr(model, "begin", None)):
            return host(model)
        with registered_prompts(dataset) as rows:
            read = tuple(str(f) for f in files if f.exists())
            table = tuple(rows.meta(r) for r in dataset.data.to_dict("records"))
            model.begin(DatasetRun(dataset.dataset_name, rows, order.of(dataset), done, read, table))
            result = host(model)
        if callable(getattr(model, "close", None)):
            model.close()
        return result

    run.echosafe_wraps = infer_data  # type: ignore[attr-defined]
    return run


def install(inference_module: Any) -> None:
    """Wrap the module's current ``infer_data`` (idempotent: an earlier wrapper is replaced, not wrapped)."""
    current = inference_module.infer_data
    inference_module.infer_data = wrap(getattr(current, "echosafe_wraps", current))


def install_api(inference_api_module: Any) -> None:
    """Hand a model the dataset's rows before ``--api-mode``'s pipeline builds its prompts (idempotent)."""
    pipeline = inference_api_module.APIEvalPipeline
    produce = getattr(pipeline, "_echosafe_host_produce", pipeline._produce_image_tasks)
    pipeline._echosafe_host_produce = produce

    async def produce_image_tasks(self: Any, cfg: Any, existing_results: dict) -> int:
        model, dataset = cfg.model_obj, cfg.dataset_obj
        if not callable(getattr(model, "begin", None)):
            return await produce(self, cfg, existing_results)
        with registered_prompts(dataset) as rows:
            done = frozenset(str(k) for k in existing_results)  # the rows the pipeline skips
            model.begin(DatasetRun(cfg.dataset_name, rows, order.of(dataset), done))
            return await produce(self, cfg, existing_results)

    pipeline._produce_image_tasks = produce_image_tasks
