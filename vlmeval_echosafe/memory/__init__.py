"""EchoSafe's insight memory bank: exact cosine top-k over (contextual key, insight) pairs, saved safely."""

from .bank import Hit, MemoryBank
from .index import gpu_available
from .log import TornTailWarning
from .persist import BankError, CompactionPolicy, EncoderMismatchError

__all__ = [
    "BankError",
    "CompactionPolicy",
    "EncoderMismatchError",
    "Hit",
    "MemoryBank",
    "TornTailWarning",
    "gpu_available",
]
