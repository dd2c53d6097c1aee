"""Where a plugin model's weights come from, and in what dtype: a local folder, the Hugging Face cache, or a clear
error that names the download command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def missing_weights_error(repo_id: str, detail: str) -> FileNotFoundError:
    from huggingface_hub import constants

    return FileNotFoundError(
        f"vlmeval-echosafe: the weights of {repo_id!r} were not found in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); {detail}. This backend never downloads. Fix: run "
        f"`hf download {repo_id}` on a machine with access (and copy that cache here, or set HF_HOME / "
        f"HF_HUB_CACHE to it), or set model_path: /local/folder for this model in wrappers/models.yaml."
    )


def resolve_model_path(model_path: str) -> Path:
    """Turn a local folder or a Hugging Face repo id into a local folder, using the local HF cache only."""
    local = Path(model_path).expanduser()
    if local.is_dir():
        return local
    looks_like_path = model_path.startswith((".", "/", "~")) or model_path.count("/") > 1
    if looks_like_path or (os.sep != "/" and os.sep in model_path):
        raise FileNotFoundError(f"vlmeval-echosafe: model folder {str(local)!r} does not exist.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_path, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError) as err:
        raise missing_weights_error(model_path, "it is neither a local folder nor a cached repo") from err


def resolve_dtype(name: str, device: str) -> Any:
    """`auto` means float32 on CPU (bf16 matmuls are slow there) and the checkpoint's dtype on CUDA."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"vlmeval-echosafe: unknown torch_dtype {name!r} (use auto, float32, bfloat16, float16)")
    return dtype
