"""What a guard is started with: the upstream, the row, the tenants' keys, the limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a tenant names a folder and a bank namespace


class ConfigError(ValueError):
    """A keys file or a flag the guard cannot start with."""


@dataclass(frozen=True)
class Limits:
    """Request limits (413 past them) and the reflection queue."""

    max_body_bytes: int = 32 << 20
    max_image_bytes: int = 16 << 20
    max_images: int = 4
    allow_image_urls: bool = False  # fetch http(s) image URLs (off: only base64 data URLs)
    queue_size: int = 256  # reflections waiting; past it a request's reflection is dropped (counted)
    reflect_workers: int = 2  # threads calling the upstream for reflections (one more thread stores)
    upstream_timeout: float = 120.0  # seconds per upstream call
    upstream_retries: int = 2  # the openai client's retries of connection errors, timeouts, 408/409/429/5xx


@dataclass(frozen=True)
class GuardConfig:
    upstream: str  # the OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    model: str  # the model name the upstream serves, and the name clients ask for
    work_dir: Path
    keys: dict[str, str]  # API key -> tenant
    admin_token: str
    defense: str = "EchoSafe"  # an EchoSafe row of wrappers/defenses.yaml (EchoSafe, EchoSafe-NoReflection, ...)
    upstream_key: str | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def tenants(self) -> list[str]:
        return sorted(set(self.keys.values()))


def load_keys(path: str | Path) -> dict[str, str]:
    """``KEYS.yaml`` (or JSON): a mapping ``api-key: tenant``; every tenant name must be a safe folder name."""
    path = Path(path)
    try:
        keys = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"--keys {path}: cannot read it ({err})") from err
    if not isinstance(keys, dict) or not keys:
        raise ConfigError(f"--keys {path}: expected a non-empty mapping `api-key: tenant`, got {type(keys).__name__}")
    out = {}
    for key, tenant in keys.items():
        if not isinstance(key, str) or len(key) < 8:
            raise ConfigError(f"--keys {path}: API keys must be strings of at least 8 characters ({key!r:.6}...)")
        if not isinstance(tenant, str) or not TENANT.match(tenant):
            raise ConfigError(f"--keys {path}: tenant {tenant!r} must match {TENANT.pattern} (it names a folder)")
        out[key] = tenant
    return out
