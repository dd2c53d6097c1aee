"""The order items reach a model in: the file's, or a seeded shuffle.

For a stateless model the order changes nothing; for EchoSafe it is part of the experiment (the memory makes items
depend on the ones before them), so it is a setting, applied where the rows are built and recorded with the results.
Both harnesses iterate the rows in the order given, so applying it to the rows gives the same stream in VLMEvalKit
(`run.py --order shuffle --order-seed N`, any `--batch-size`) and lmms-eval (`MMSBPP_ORDER=shuffle
MMSBPP_ORDER_SEED=N`). The launcher turns its flags into these variables, read once per dataset load.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

ORDERS = ("file", "shuffle")
ORDER_ENV, SEED_ENV = "MMSBPP_ORDER", "MMSBPP_ORDER_SEED"


@dataclass(frozen=True)
class StreamOrder:
    """``file``: the rows' own order; ``shuffle``: a permutation of the items drawn with ``seed``."""

    order: str = "file"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"stream order {self.order!r}; expected one of {ORDERS}")
        if self.order == "shuffle" and (type(self.seed) is not int or self.seed < 0):
            raise ValueError(f"order shuffle needs a whole-number seed >= 0 (order_seed), got {self.seed!r}")
        if self.order == "file" and self.seed is not None:
            raise ValueError("order_seed is for order shuffle; the file order takes no seed")

    def as_dict(self) -> dict:
        return asdict(self)

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows in this order (the ``index`` column is untouched, so predictions still match by row)."""
        if self.order == "file":
            return frame
        perm = np.random.default_rng(self.seed).permutation(len(frame))
        return frame.iloc[perm]


def requested() -> StreamOrder:
    """The order asked for in the environment (``MMSBPP_ORDER``, ``MMSBPP_ORDER_SEED``); default: the file's."""
    order = os.environ.get(ORDER_ENV) or "file"
    seed = os.environ.get(SEED_ENV)
    if seed is not None and not seed.strip().isdigit():
        raise ValueError(f"{SEED_ENV}={seed!r}: give a whole number >= 0")
    try:
        return StreamOrder(order, None if seed is None or order == "file" else int(seed))
    except ValueError as err:
        raise ValueError(f"{ORDER_ENV}={order!r} {SEED_ENV}={seed!r}: {err}") from err


def of(dataset: object) -> StreamOrder:
    """The order a dataset object was built in (the plugin's datasets record it; others are in file order)."""
    return getattr(dataset, "stream_order", None) or StreamOrder()
