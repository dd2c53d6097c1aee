"""EchoSafe's insight memory bank: exact cosine top-k over (contextual key, insight) pairs, saved safely."""

from .bank import Hit, MemoryBank
from .index import gpu_available
from .persist import BankError, EncoderMismatchError

__all__ = ["BankError", "EncoderMismatchError", "Hit", "MemoryBank", "gpu_available"]
