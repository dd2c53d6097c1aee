"""Keep API keys out of logs and run files.

VLMEvalKit logs ``API Key: <key>`` at INFO, logs the judge kwargs (with ``--judge-key``) and records ``sys.argv``
in ``status.json``. The launcher masks every known secret in every log record at creation time (so all loggers
and handlers, including the file handler the host adds later, see the masked text) and in the recorded argv.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

MASK = "***"
SECRET_ENV = ("OPENAI_API_KEY", "SILICONFLOW_API_KEY", "AZURE_OPENAI_API_KEY", "LMDEPLOY_API_KEY")
SECRET_FLAGS = ("--judge-key", "--key")
_MIN_LEN = 6  # shorter values (e.g. the host's default 'sk-admin' is fine to mask, but 'a' would mangle logs)


def collect_secrets(argv: Iterable[str]) -> list[str]:
    """Secrets given in the environment or on the command line."""
    argv = list(argv)
    found = [os.environ[v] for v in SECRET_ENV if os.environ.get(v)]
    for i, arg in enumerate(argv):
        for flag in SECRET_FLAGS:
            if arg == flag and i + 1 < len(argv):
                found.append(argv[i + 1])
            elif arg.startswith(flag + "="):
                found.append(arg.split("=", 1)[1])
    return sorted({s for s in found if len(s) >= _MIN_LEN}, key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        text = text.replace(s, MASK)
    return text


def mask_argv(argv: Iterable[str], secrets: Iterable[str]) -> list[str]:
    secrets = list(secrets)
    return [mask(a, secrets) for a in argv]


def install_log_masking(secrets: list[str]) -> None:
    """Mask secrets in every log record from now on (idempotent for the same process)."""
    if not secrets:
        return
    base = getattr(logging, "_echosafe_base_factory", logging.getLogRecordFactory())
    logging._echosafe_base_factory = base  # type: ignore[attr-defined]

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = base(*args, **kwargs)
        message = record.getMessage()
        masked = mask(message, secrets)
        if masked != message:
            record.msg, record.args = masked, ()
        return record

    logging.setLogRecordFactory(factory)
