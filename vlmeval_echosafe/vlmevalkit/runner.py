"""The launcher's `infer_data`: the plugin's models run through the core's one loop, the host's own models
through the host's loop, with the host's files either way.

The host calls ``infer_data(model, model_name, work_dir, dataset, out_file, ...)`` once per model x dataset and
rank. For a row of the plugin (:class:`~.model.HostDefense`) this module, before the first item, hands the model
a :class:`~..core.run.DatasetRun` (rows the host finished, read from the files the host reads, :mod:`.files`; the
stream order; every row's metadata) and the registry of its prompts' rows; then micro-batches of ``--batch-size``
rows (1 for a defense that answers one item at a time) go through :func:`~..core.loop.answer_stream`, the
checkpoint ``{rank}{world}_{dataset}.pkl`` written atomically after each one, so ``--reuse``, resume and
evaluation do not change; ``close`` ends the run.

Under torchrun, a defense whose ranks share one stream (EchoSafe) runs in global steps whatever the batch size:
the rows still to do, in stream order, are cut into steps of W·B, and rank r answers the step's items r, r + W,
... (:mod:`..core.sync`), which for a fresh run is the host's own split (rows r::W). Every rank enters every step,
also with nothing of its own, and writes all of the step's answers to its own checkpoint, so each checkpoint ends
at a step boundary and a run killed between two ranks' writes resumes from whole steps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from ..core.item import Item, Response
from ..core.loop import answer_stream, chunks, micro_batch
from ..core.run import DatasetRun
from ..core.sync import StreamSync, owned
from ..datasets import order
from .checkpoint import atomic_dump
from .files import done_rows, predictions
from .model import HostDefense
from .rows import INDEX_ONLY, PromptRows

log = logging.getLogger(__name__)


def build_model(model: Any, model_name: str, use_vllm: bool) -> Any:
    """The host's model construction in `infer_data` (same kwargs, same WORLD_SIZE dance)."""
    if not isinstance(model, str):
        return model
    from vlmeval.config import supported_VLM

    kwargs = {}
    if model_name is not None and any(k in model_name for k in ("Llama-4", "Qwen2-VL", "Qwen2.5-VL")):
        kwargs = {"use_vllm": use_vllm}
    ws_bak = os.environ.pop("WORLD_SIZE", None)
    try:
        return supported_VLM[model_name](**kwargs)
    finally:
        if ws_bak:
            os.environ["WORLD_SIZE"] = ws_bak


def shares_stream(model: Any, model_name: str) -> bool:
    """Whether the row (an object, or the registry entry of its name) keeps one stream across ranks."""
    if isinstance(model, str):
        from vlmeval.config import supported_VLM

        keywords = getattr(supported_VLM.get(model_name), "keywords", {})
        return bool(getattr(keywords.get("defense"), "shares_stream", False))
    return isinstance(model, HostDefense) and model.defense.shares_stream


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


def infer_data(
    model: Any,
    model_name: str,
    work_dir: str,
    dataset: Any,
    out_file: str,
    verbose: bool = False,
    api_nproc: int = 4,
    use_vllm: bool = False,
    retry_failed: bool = True,
    *,
    batch_size: int,
    host_infer_data: Callable[..., Any],
) -> Any:
    """Drop-in for `vlmeval.inference.infer_data` (same arguments and files)."""
    from vlmeval.smp import get_rank_and_world_size

    def host(model: Any) -> Any:
        return host_infer_data(
            model=model,
            model_name=model_name,
            work_dir=work_dir,
            dataset=dataset,
            out_file=out_file,
            verbose=verbose,
            api_nproc=api_nproc,
            use_vllm=use_vllm,
            retry_failed=retry_failed,
        )

    rank, world = get_rank_and_world_size()
    shared = world > 1 and shares_stream(model, model_name)
    files, done = done_rows(work_dir, model_name, dataset.dataset_name, out_file, shared)
    mine = dataset.data if shared else dataset.data.iloc[list(range(rank, len(dataset), world))]
    if all(str(i) in done for i in mine["index"]):  # finished: the host's path, which builds no model
        return host(model)
    model = build_model(model, model_name, use_vllm)
    if not isinstance(model, HostDefense):  # the host's own model: the host's loop
        if batch_size > 1:
            log.warning("%s is not a plugin row; the host answers it one sample at a time", model_name)
        return host(model)
    model.set_dump_image(dataset.dump_image)
    with registered_prompts(dataset) as rows:
        read = tuple(str(f) for f in files if f.exists())
        table = tuple(rows.meta(r) for r in dataset.data.to_dict("records"))
        model.begin(DatasetRun(dataset.dataset_name, rows.kind, order.of(dataset), done, read, table), rows)
        res = predictions([files[0], Path(out_file)])  # what infer_data itself reuses
        if shared:
            _in_steps(model, dataset, out_file, res, mine, done, batch_size, world, rank, verbose)
        else:
            _in_batches(model, model_name, dataset, out_file, res, mine, batch_size, rank, world, verbose)
    model.close()
    return model


def _prompts(model: HostDefense, dataset: Any, chunk: Any) -> list[Item]:
    """The chunk's rows as items, each built by the host's prompt choice: the dataset's forced prompt, the
    model's custom one, or the dataset's."""
    name = dataset.dataset_name
    items = []
    for i in range(len(chunk)):
        line = chunk.iloc[i]
        if getattr(dataset, "force_use_dataset_prompt", False) or not model.use_custom_prompt(name):
            message = dataset.build_prompt(line)
        else:
            message = model.build_prompt(line, dataset=name)
        items.append(model.item(_checked(model, message), name))
    return items


def _checked(model: HostDefense, message: Any) -> list[dict[str, str]]:
    from .model import checked_message

    return checked_message(model, message)


def _record(res: dict, verbose: bool, chunk: Any, items: list[Item], responses: list[Response]) -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    for idx, response in zip(chunk["index"], responses, strict=True):
        if verbose:
            print(response.text, flush=True)
        res[idx] = response.text


def _skip_errors(model_name: str) -> Callable[[list[Item], Exception], list[Response]] | None:
    """The host's ``SKIP_ERR=1`` switch: a micro-batch that fails with a RuntimeError is recorded as failed
    answers (the host's failure text, re-asked by ``--reuse``), and the run goes on."""
    if os.environ.get("SKIP_ERR", False) != "1":
        return None

    def failed(items: list[Item], err: Exception) -> list[Response]:
        if not isinstance(err, RuntimeError):
            raise err
        log.warning("%s: batch failed: %s", model_name, err)
        return [Response(f"Failed to obtain answer: {type(err)} {err}") for _ in items]

    return failed


def _in_batches(
    model: HostDefense,
    model_name: str,
    dataset: Any,
    out_file: str,
    res: dict,
    mine: Any,
    batch_size: int,
    rank: int,
    world: int,
    verbose: bool,
) -> None:
    from tqdm import tqdm

    size = micro_batch(model.defense, batch_size)
    todo = mine[~mine["index"].isin(res)]
    bar = tqdm(total=len(todo), desc=f"Infer {model_name}/{dataset.dataset_name} (batch {size}), Rank {rank}/{world}")
    pending = list(chunks(todo, size))
    queue = iter(pending)

    def batches() -> Iterator[list[Item]]:
        for chunk in pending:
            yield _prompts(model, dataset, chunk)

    def done(items: list[Item], responses: list[Response]) -> None:
        _record(res, verbose, next(queue), items, responses)
        atomic_dump(res, out_file)  # after every micro-batch: a crash loses at most the one in flight
        bar.update(len(items))

    answer_stream(model.defense, batches(), done, failed=_skip_errors(model_name))
    bar.close()
    atomic_dump({k: res[k] for k in mine["index"]}, out_file)


def _in_steps(
    model: HostDefense,
    dataset: Any,
    out_file: str,
    res: dict,
    rows: Any,
    done_before: frozenset[str],
    batch_size: int,
    world: int,
    rank: int,
    verbose: bool,
) -> None:
    """The torchrun loop of a defense whose ranks share one stream (see the module docstring)."""
    from tqdm import tqdm

    todo = rows[~rows["index"].astype(str).isin(done_before)]  # the same on every rank: files, not local state
    sync = StreamSync.from_process_group()
    steps = list(chunks(todo, world * batch_size))
    bar = tqdm(
        total=len(todo),
        desc=f"Infer {model.defense.name}/{dataset.dataset_name} (steps of {world}x{batch_size}), Rank {rank}",
    )
    mine = [step.iloc[owned(len(step), rank, world)] for step in steps]
    queue = iter(mine)

    def batches() -> Iterator[list[Item]]:
        for chunk in mine:
            yield _prompts(model, dataset, chunk)

    def done(items: list[Item], responses: list[Response]) -> None:
        answers: dict = {}
        chunk = next(queue)
        _record(answers, verbose, chunk, items, responses)
        res.update(sync.exchange(partial(list, answers.items())))
        atomic_dump(res, out_file)  # every rank: the whole step
        bar.update(len(chunk) * world)

    answer_stream(model.defense, batches(), done)
    bar.close()
    # The rows of every finished step and the reused ones; the host merges all ranks' checkpoints.
    indices = set(dataset.data["index"])
    atomic_dump({k: v for k, v in res.items() if k in indices}, out_file)


def install(inference_module: Any, batch_size: int) -> None:
    """Put the runner in place of the host's `infer_data` (idempotent)."""
    host = getattr(inference_module, "_echosafe_host_infer_data", inference_module.infer_data)
    inference_module._echosafe_host_infer_data = host

    def run(*args: Any, **kwargs: Any) -> Any:
        return infer_data(*args, **kwargs, batch_size=batch_size, host_infer_data=host)

    inference_module.infer_data = run


def install_api(inference_api_module: Any) -> None:
    """Hand a plugin row the dataset's rows before ``--api-mode``'s pipeline builds its prompts (idempotent)."""
    pipeline = inference_api_module.APIEvalPipeline
    produce = getattr(pipeline, "_echosafe_host_produce", pipeline._produce_image_tasks)
    pipeline._echosafe_host_produce = produce

    async def produce_image_tasks(self: Any, cfg: Any, existing_results: dict) -> int:
        model, dataset = cfg.model_obj, cfg.dataset_obj
        if not isinstance(model, HostDefense):
            return await produce(self, cfg, existing_results)
        with registered_prompts(dataset) as rows:
            done = frozenset(str(k) for k in existing_results)  # the rows the pipeline skips
            model.begin(DatasetRun(cfg.dataset_name, rows.kind, order.of(dataset), done), rows)
            return await produce(self, cfg, existing_results)

    pipeline._produce_image_tasks = produce_image_tasks
