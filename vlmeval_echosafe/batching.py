"""Micro-batched inference inside VLMEvalKit's runner (`run.py … --batch-size N`).

The host's `infer_data` runs a local model one sample at a time. With ``--batch-size N`` (N > 1) the launcher
puts `infer_data_batched` in its place. For a model that decodes several rows at once (``supports_batch``: the
plugin's transformers backend, and EchoSafe on it) it hands N prompts at a time to ``model.generate_batch``;
every other model goes to the host's own function, untouched. The files are the host's: the same checkpoint
``{rank}{world}_{dataset}.pkl`` (a dict of index → prediction, written after every batch), the same
``{model}_{dataset}_PREV.pkl`` reuse and the same final dump, so ``--reuse``, resume and evaluation do not change.
The checkpoint is written atomically (:mod:`.checkpoint`), like the host's own once the launcher has run.
"""

from __future__ import annotations

import logging
import os
import os.path as osp
from collections.abc import Callable
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
    import torch
    from tqdm import tqdm
    from vlmeval.smp import get_rank_and_world_size, load

    host_args = dict(verbose=verbose, api_nproc=api_nproc, use_vllm=use_vllm, retry_failed=retry_failed)
    dataset_name = dataset.dataset_name
    prev_file = f"{work_dir}/{model_name}_{dataset_name}_PREV.pkl"
    res = load(prev_file) if osp.exists(prev_file) else {}
    if osp.exists(out_file):
        res.update(load(out_file))
    rank, world_size = get_rank_and_world_size()
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
        structs = [_prompt(model, dataset, dataset_name, chunk.iloc[i]) for i in range(len(chunk))]
        if os.environ.get("SKIP_ERR", False) == "1":  # the host's switch: record the error, go on
            try:
                responses = model.generate_batch(structs, dataset=dataset_name)
            except RuntimeError as err:
                log.warning("%s: batch failed: %s", model_name, err)
                responses = [f"Failed to obtain answer: {type(err)} {err}"] * len(structs)
        else:
            responses = model.generate_batch(structs, dataset=dataset_name)
        if len(responses) != len(structs):
            raise RuntimeError(f"{model_name}: generate_batch gave {len(responses)} answers for {len(structs)}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for idx, response in zip(chunk["index"], responses, strict=True):
            if verbose:
                print(response, flush=True)
            res[idx] = response
        atomic_dump(res, out_file)  # after every batch: a crash loses at most the batch in flight
        bar.update(len(chunk))
    bar.close()
    res = {k: res[k] for k in data_indices}
    atomic_dump(res, out_file)
    return model


def _prompt(model: Any, dataset: Any, dataset_name: str, line: Any) -> Any:
    """The host's prompt choice: the dataset's forced prompt, the model's custom one, or the dataset's."""
    if getattr(dataset, "force_use_dataset_prompt", False):
        return dataset.build_prompt(line)
    if hasattr(model, "use_custom_prompt") and model.use_custom_prompt(dataset_name):
        return model.build_prompt(line, dataset=dataset_name)
    return dataset.build_prompt(line)


def install(inference_module: Any, batch_size: int) -> None:
    """Put the batched loop in place of the host's `infer_data` (idempotent; N = 1 restores the host's)."""
    host = getattr(inference_module, "_echosafe_host_infer_data", inference_module.infer_data)
    inference_module._echosafe_host_infer_data = host
    if batch_size <= 1:
        inference_module.infer_data = host
        return

    def infer_data(*args: Any, **kwargs: Any) -> Any:
        return infer_data_batched(*args, **kwargs, batch_size=batch_size, host_infer_data=host)

    inference_module.infer_data = infer_data
