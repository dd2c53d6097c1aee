"""EchoSafe, one step per module: settings and run identity, streams (banks), the method, the staleness-1 pipeline."""

from .method import EchoSafe
from .settings import EchoSafeSettings, ResumeMismatchError

__all__ = ["EchoSafe", "EchoSafeSettings", "ResumeMismatchError"]
