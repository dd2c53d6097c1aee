"""``vlmeval-echosafe serve``: start EchoSafe Guard in front of an OpenAI-compatible VLM server (docs/guard.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ConfigError, GuardConfig, Limits, load_keys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlmeval-echosafe serve", description=__doc__)
    p.add_argument("--upstream", required=True, help="the upstream's OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="the model name the upstream serves (clients ask for it)")
    p.add_argument("--defense", default="EchoSafe", help="an EchoSafe row of wrappers/defenses.yaml (default EchoSafe)")
    p.add_argument("--work-dir", required=True, type=Path, help="banks, traces and the guard's logs go here")
    p.add_argument("--keys", required=True, type=Path, help="YAML/JSON mapping each API key to a tenant (sk-a: alice)")
    p.add_argument("--admin-token", required=True, help="the admin API's bearer token")
    p.add_argument("--upstream-key", default=None, help="the upstream's API key (default: OPENAI_API_KEY or EMPTY)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    d = Limits()
    p.add_argument("--queue-size", type=int, default=d.queue_size, help="reflections waiting before one is dropped")
    p.add_argument("--reflect-workers", type=int, default=d.reflect_workers, help="threads reflecting at once")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes)
    p.add_argument("--max-images", type=int, default=d.max_images)
    p.add_argument("--allow-image-urls", action="store_true", help="fetch http(s) image URLs (default: data URLs only)")
    p.add_argument("--upstream-timeout", type=float, default=d.upstream_timeout, help="seconds per upstream call")
    p.add_argument("--upstream-retries", type=int, default=d.upstream_retries)
    return p


def config_from(args: argparse.Namespace) -> GuardConfig:
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_image_bytes=args.max_image_bytes,
        max_images=args.max_images,
        allow_image_urls=args.allow_image_urls,
        queue_size=args.queue_size,
        reflect_workers=args.reflect_workers,
        upstream_timeout=args.upstream_timeout,
        upstream_retries=args.upstream_retries,
    )
    if len(args.admin_token) < 16:
        raise ConfigError("--admin-token must be at least 16 characters")
    return GuardConfig(
        upstream=args.upstream,
        model=args.model,
        work_dir=args.work_dir,
        keys=load_keys(args.keys),
        admin_token=args.admin_token,
        defense=args.defense,
        upstream_key=args.upstream_key,
        limits=limits,
    )


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from(args)
        if args.admin_token in config.keys:
            raise ConfigError("--admin-token must differ from every API key")
    except ConfigError as err:
        print(f"vlmeval-echosafe serve: error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import create_app
    from .guard import Guard

    guard = Guard(config)
    uvicorn.run(create_app(guard), host=args.host, port=args.port, log_level="warning")
    return 0
