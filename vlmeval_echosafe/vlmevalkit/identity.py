"""A row's run identity: everything that changes what it computes, saved beside its predictions and compared before
any model loads when a run would continue (or reuse) them.

It covers the row (defense class and every setting), the inner model (its plugin entry: weights path or tiny
build, family, generation lengths, dtype, device; a served model's endpoint, sampling and the weights the
endpoint reports serving; a host model's registry entry), the effective micro-batch size (it decides which
insights an item can see), the torchrun world size, the stream order, the versions of EchoSafe's prompts and of
its insight validator's rules, and a warm-start bank's content. The judge is not part of it: evaluation writes
per-judge files and caches (``<stem>_<judge>_*``), so re-judging never touches predictions.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..catalog import _class as catalog_class
from ..core.inner import adapter_class, protocol_of
from ..datasets import order as stream_order
from ..echosafe.settings import ResumeMismatchError, differing_keys, lookup
from .inner import host_protocol

log = logging.getLogger(__name__)

SUFFIX = "_run_identity.json"  # <work_dir>/<model>/<model>_<dataset>_run_identity.json
SECRET_KEYS = ("key", "api_key")


def path_for(work: str | Path, model: str, dataset: str) -> Path:
    return Path(work) / f"{model}_{dataset}{SUFFIX}"


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()[:16]


def folder_digest(folder: str | Path) -> str:
    """A content hash of every file under ``folder`` (a warm-start bank), or ``missing``."""
    root = Path(folder).expanduser()
    if not root.exists():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def served_model(spec: dict[str, Any]) -> str:
    """What the endpoint reports serving under the row's model name (vLLM's ``root``: the weights' path), asked
    once with a short timeout; ``unreachable`` when the endpoint does not answer."""
    from openai import OpenAI

    from ..models.served import api_key

    try:
        client = OpenAI(base_url=spec["base_url"], api_key=api_key(spec.get("key")), timeout=10, max_retries=0)
        for m in client.models.list().data:
            if m.id == spec["model"]:
                return str(getattr(m, "root", None) or m.id)
        return "not listed"
    except Exception as err:  # the identity records it; a resume then compares the same word
        log.warning("%s at %s: /v1/models did not answer (%s)", spec["model"], spec["base_url"], err)
        return "unreachable"


def _inner(keywords: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(the inner model's identity, its protocol)."""
    spec = keywords.get("inner_spec")
    if spec:
        public = {k: v for k, v in spec.items() if k not in SECRET_KEYS}
        protocol = protocol_of(catalog_class(spec["class"], "wrappers/models.yaml"))
        if protocol == "served-chat":
            public["served"] = served_model(spec)
        return public, protocol
    from vlmeval.config import supported_VLM

    host = supported_VLM[keywords["inner"]]
    target = getattr(host, "func", host)
    kw = {k: v for k, v in getattr(host, "keywords", {}).items() if k not in SECRET_KEYS}
    return {"host": keywords["inner"], "class": getattr(target, "__name__", str(target)), "args": repr(kw)}, (
        host_protocol(target)
    )


def row_identity(keywords: dict[str, Any], batch_size: int, world_size: int) -> dict[str, Any]:
    """The identity of a plugin row (the keywords of its ``supported_VLM`` entry, ``--config`` overrides applied)."""
    from ..echosafe import EchoSafe

    defense = keywords["defense"]
    settings = dict(keywords.get("settings") or {})
    inner, protocol = _inner(keywords)
    batched = defense.planned_batched(adapter_class(protocol).batched, settings)
    identity: dict[str, Any] = {
        "row": keywords.get("name"),
        "defense": defense.__name__,
        "settings": json.loads(json.dumps(settings, default=str)),
        "inner": inner,
        "batch_size": batch_size if batched else 1,
        "world_size": world_size,
        "order": stream_order.requested().as_dict(),
    }
    if issubclass(defense, EchoSafe):
        from ..defenses import echosafe_prompts, insight, insight_lexicon, insight_orders

        rules = "".join(inspect.getsource(m) for m in (insight, insight_orders, insight_lexicon))
        identity["versions"] = {
            "prompt": echosafe_prompts.PROMPT_VERSION,
            "validator": _digest(rules),  # the rules themselves (parser, orders, lexicon), not a hand-kept number
        }
        if settings.get("memory"):
            identity["warm_start"] = folder_digest(settings["memory"])
    return identity


def check(path: Path, identity: dict[str, Any], resuming: bool) -> None:
    """Refuse to continue a run whose saved identity differs (naming each key); record it for a fresh run."""
    if resuming and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        diff = differing_keys(saved, identity)
        if diff:
            detail = ", ".join(f"{k}: {lookup(saved, k)!r} -> {lookup(identity, k)!r}" for k in diff)
            raise ResumeMismatchError(
                f"{path.parent}: the predictions there were made with other settings ({detail}); resume with the "
                "same settings, or start a new run in another --work-dir"
            )
        return
    if resuming:
        log.warning("%s: earlier predictions record no run identity; they are continued unchecked", path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    # every torchrun rank records the same identity: a tmp name per process, so one rank's rename never takes
    # another's file away
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
