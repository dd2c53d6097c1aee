"""Micro-batched inference inside VLMEvalKit's runner (`run.py … --batch-size N`).

The host's `infer_data` runs a local model one sample at a time. With ``--batch-size N`` (N > 1) the launcher
puts `infer_data_batched` in its place. For a model that decodes several rows at once (``supports_batch``: the
plugin's transformers backend, and EchoSafe on it) it hands N prompts at a time to ``model.generate_batch``;
every other model goes to the host's own function, untouched. The files are the host's: the same checkpoint
``{rank}{world}_{dataset}.pkl`` (a dict of index → prediction, written after every batch), the same
``{model}_{dataset}_PREV.pkl`` reuse and the same final dump, so ``--reuse``, resume and evaluation do not change.
The checkpoint is written atomically (:mod:`.checkpoint`), like the host's own once the launcher has run.

Under torchrun, a model whose ranks share one stream (``shares_stream``: EchoSafe) runs in global steps whatever
the batch size: the rows still to do, in stream order, are cut into steps of W·B, and rank r answers the step's
items r, r + W, … (`defenses/sync.py`), which for a fresh run is the host's own split (rows r::W). Every rank
enters every step, also with nothing of its own (the last step may be short). After each step every rank writes
all of the step's answers to its own checkpoint, so each checkpoint ends at a step boundary and a run killed
between two ranks' writes resumes from whole steps, exactly as one process at batch size W·B would; the host
merges the checkpoints as usual.
"""

from __future__ import annotations

import logging
import os
import os.path as osp
from collections.abc import Callable
from functools import partial
from typing import Any

from .checkpoint import atomic_dump

log = logging.getLogger(__name__)


def checked_message(model: Any, message: Any) -> list[dict[str, str]]:
    """The checks and normalisation the host's `BaseModel.generate` applies to one message."""
    kind = model.check_content(message)
    if kind not in ("str", "dict", "liststr", "listdict"):
        raise ValueError(f"vlmeval-echosafe: invalid input message {message!r}")
    message = model.preproc_content(message)
    if message is None or model.check_content(message) != "listdict":
        raise ValueError("vlmeval-echosafe: message did not normalise to a list of {type, value} items")
    for item in message:
        if item["type"] not in model.allowed_types:
            raise ValueError(f"vlmeval-echosafe: {type(model).__name__} cannot take {item['type']!r} inputs")
    return message


def supports_batch(model: Any) -> bool:
    return callable(getattr(model, "generate_batch", None)) and bool(getattr(model, "supports_batch", False))


def shares_stream(model: Any, model_name: str) -> bool:
    """Whether the model (an object, or the registry entry of its name) keeps one stream across ranks."""
    if isinstance(model, str):
        from vlmeval.config import supported_VLM

        factory = supported_VLM.get(model_name)
        model = getattr(factory, "func", factory)
    return bool(getattr(model, "shares_stream", False))


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


def infer_data_batched(
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
    """Drop-in for `vlmeval.inference.infer_data` (same arguments and files), batching where the model can."""
    from tqdm import tqdm
    from vlmeval.smp import get_rank_and_world_size, load

    host_args = dict(verbose=verbose, api_nproc=api_nproc, use_vllm=use_vllm, retry_failed=retry_failed)
    dataset_name = dataset.dataset_name
    rank, world_size = get_rank_and_world_size()
    if world_size > 1 and shares_stream(model, model_name):
        return _infer_in_steps(model, model_name, work_dir, dataset, out_file, batch_size, use_vllm, verbose)
    if batch_size <= 1:
        return host_infer_data(model, model_name, work_dir, dataset, out_file, **host_args)
    prev_file = f"{work_dir}/{model_name}_{dataset_name}_PREV.pkl"
    res = load(prev_file) if osp.exists(prev_file) else {}
    if osp.exists(out_file):
        res.update(load(out_file))
    data = dataset.data.iloc[list(range(rank, len(dataset), world_size))]
    data_indices = list(data["index"])
    if all(idx in res for idx in data_indices):  # finished: the host's path, which builds no model
        return host_infer_data(model, model_name, work_dir, dataset, out_file, **host_args)

    model = build_model(model, model_name, use_vllm)
    if getattr(model, "is_api", False) or not supports_batch(model):
        log.warning("%s decodes one sample at a time; --batch-size has no effect on it", model_name)
        return host_infer_data(model, model_name, work_dir, dataset, out_file, **host_args)
    model.set_dump_image(dataset.dump_image)

    todo = data[~data["index"].isin(res)]
    bar = tqdm(
        total=len(todo), desc=f"Infer {model_name}/{dataset_name} (batch {batch_size}), Rank {rank}/{world_size}"
    )
    for start in range(0, len(todo), batch_size):
        chunk = todo.iloc[start : start + batch_size]
        _answer_chunk(model, model.generate_batch, model_name, dataset, chunk, res, verbose)
        atomic_dump(res, out_file)  # after every batch: a crash loses at most the batch in flight
        bar.update(len(chunk))
    flush = getattr(model, "flush", None)
    if callable(flush):  # a pipelined model's work still pending for this dataset (EchoSafe staleness: 1)
        flush()
    bar.close()
    res = {k: res[k] for k in data_indices}
    atomic_dump(res, out_file)
    return model


def _answer_chunk(
    model: Any, call: Callable[..., list[str]], model_name: str, dataset: Any, chunk: Any, res: dict, verbose: bool
) -> None:
    """Prompts for the chunk's rows, one ``call``, the answers into ``res``."""
    import torch

    structs = [_prompt(model, dataset, dataset.dataset_name, chunk.iloc[i]) for i in range(len(chunk))]
    if os.environ.get("SKIP_ERR", False) == "1":  # the host's switch: record the error, go on
        try:
            responses = call(structs, dataset=dataset.dataset_name)
        except RuntimeError as err:
            log.warning("%s: batch failed: %s", model_name, err)
            responses = [f"Failed to obtain answer: {type(err)} {err}"] * len(structs)
    else:
        responses = call(structs, dataset=dataset.dataset_name)
    if len(responses) != len(structs):
        raise RuntimeError(f"{model_name}: {len(responses)} answers for {len(structs)} prompts")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    for idx, response in zip(chunk["index"], responses, strict=True):
        if verbose:
            print(response, flush=True)
        res[idx] = response


def _infer_in_steps(
    model: Any,
    model_name: str,
    work_dir: str,
    dataset: Any,
    out_file: str,
    batch_size: int,
    use_vllm: bool,
    verbose: bool,
) -> Any:
    """The torchrun loop of a model whose ranks share one stream (see the module docstring)."""
    from tqdm import tqdm
    from vlmeval.smp import get_rank_and_world_size

    from .defenses.sync import StreamSync, owned
    from .hostrun import checkpoint_files, predictions, rank_checkpoints

    rank, world = get_rank_and_world_size()
    name = dataset.dataset_name
    reused = checkpoint_files(work_dir, model_name, name, out_file)  # the PREV file, then this rank's checkpoint
    res = predictions(reused)
    done = predictions([reused[0], *rank_checkpoints(work_dir, name)])  # what any rank finished
    todo = dataset.data[~dataset.data["index"].isin(done)]  # the same on every rank: files, not local state
    indices = set(dataset.data["index"])
    if len(todo):
        model = build_model(model, model_name, use_vllm)
        model.set_dump_image(dataset.dump_image)
        sync = StreamSync.from_process_group()
        step = world * batch_size
        bar = tqdm(total=len(todo), desc=f"Infer {model_name}/{name} (steps of {world}x{batch_size}), Rank {rank}")
        for start in range(0, len(todo), step):
            chunk = todo.iloc[start : start + step]
            mine = chunk.iloc[owned(len(chunk), rank, world)]
            answers: dict = {}
            _answer_chunk(model, model.generate_step, model_name, dataset, mine, answers, verbose)
            res.update(sync.exchange(partial(list, answers.items())))
            atomic_dump(res, out_file)  # every rank: the whole step
            bar.update(len(chunk))
        bar.close()
    # The rows of every finished step and the reused ones; the host merges all ranks' checkpoints.
    atomic_dump({k: v for k, v in res.items() if k in indices}, out_file)
    return model


def _prompt(model: Any, dataset: Any, dataset_name: str, line: Any) -> Any:
    """The host's prompt choice: the dataset's forced prompt, the model's custom one, or the dataset's."""
    if getattr(dataset, "force_use_dataset_prompt", False):
        return dataset.build_prompt(line)
    if hasattr(model, "use_custom_prompt") and model.use_custom_prompt(dataset_name):
        return model.build_prompt(line, dataset=dataset_name)
    return dataset.build_prompt(line)


def install(inference_module: Any, batch_size: int) -> None:
    """Put the launcher's loop in place of the host's `infer_data` (idempotent). With N = 1 it hands every model to
    the host's loop, except one whose ranks share a stream under torchrun."""
    host = getattr(inference_module, "_echosafe_host_infer_data", inference_module.infer_data)
    inference_module._echosafe_host_infer_data = host

    def infer_data(*args: Any, **kwargs: Any) -> Any:
        return infer_data_batched(*args, **kwargs, batch_size=batch_size, host_infer_data=host)

    inference_module.infer_data = infer_data
