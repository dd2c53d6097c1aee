"""The process group under torchrun, started by the launcher with the backend the machine has.

VLMEvalKit starts the group itself with a hard-coded ``backend='nccl'``, which fails on a machine without GPUs. The
launcher starts it first (NCCL where CUDA is available, gloo otherwise) and makes the host's later
``init_process_group`` call find the group running and return. Objects EchoSafe exchanges between ranks go through
the same group (`defenses/sync.py`); under NCCL they travel through each rank's own GPU, which the host has
already chosen (``CUDA_VISIBLE_DEVICES`` per local rank) when this runs.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def backend_for_machine() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group() -> str | None:
    """Under torchrun (WORLD_SIZE > 1): start the default group and return its backend; otherwise None."""
    if world_size() <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=int(os.environ.get("DIST_TIMEOUT", 3600)))  # the host's variable
        dist.init_process_group(backend=backend_for_machine(), timeout=timeout)
    _skip_second_init(dist)
    return dist.get_backend()


def _skip_second_init(dist: Any) -> None:
    """Make ``init_process_group`` return when the group is already running (the host calls it with NCCL)."""
    original = getattr(dist, "_echosafe_original_init", dist.init_process_group)
    dist._echosafe_original_init = original

    def init_once(*args: Any, **kwargs: Any) -> None:
        if dist.is_initialized():
            log.info("process group already started with %s; not starting another", dist.get_backend())
            return None
        return original(*args, **kwargs)

    dist.init_process_group = init_once
