"""Runs ``run.py`` (the launcher's ``main``) many times for the chaos test, each run a forked child to be killed.

Importing the host and the model libraries takes most of a small run's time (about 15 s of ``import vlmeval`` and
``sentence_transformers`` on two cores), so this process imports them once and forks a child per run: the child
is what ``python run.py ARGS`` would be after its imports. Nothing runs in this process before a fork but imports,
so no thread pool is copied half-used.

Protocol, one JSON object per line: in on stdin ``{"argv": [...], "log": path, "env": {...}, "kill_after": s}``
(``env`` may set ``ECHOSAFE_CHAOS_KILL_AT``, ``ECHOSAFE_CHAOS_COUNTS``, ``ECHOSAFE_CHAOS_SEED``; ``kill_after``:
SIGKILL the child after that many seconds), out on stdout ``{"signal": n|null, "code": n|null, "seconds": s}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _child(job: dict) -> None:
    """The run: output to the job's log, kill points installed, then the launcher; never returns."""
    import chaos_hooks

    from vlmeval_echosafe import launcher

    code = 1
    try:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ.update(job.get("env", {}))
        chaos = chaos_hooks.install(os.environ.get(chaos_hooks.ENV), int(os.environ.get(chaos_hooks.SEED_ENV, "0")))
        try:
            code = launcher.main(job["argv"])
        finally:
            chaos_hooks.write_counts(chaos, os.environ.get(chaos_hooks.COUNTS_ENV))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 -- reported in the log, the exit code says it failed
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, kill_after: float | None) -> int:
    if kill_after is None:
        return os.waitpid(pid, 0)[1]
    deadline = time.monotonic() + kill_after
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.01)


def main() -> None:
    from vlmeval_echosafe.vlmevalkit import patches

    for key, value in patches.HOST_ENV_DEFAULTS.items():  # as the launcher sets them before importing the host
        os.environ.setdefault(key, value)
    patches.import_host()
    import sentence_transformers  # noqa: F401 -- the text encoder's import, the slowest of all
    import vlmeval.inference_api  # noqa: F401 -- the modules the launcher patches
    import vlmeval.inference_mt  # noqa: F401
    import vlmeval.inference_video  # noqa: F401
    import vlmeval.utils.mp_util  # noqa: F401
    import xgrammar  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(job)
        status = _wait(pid, job.get("kill_after"))
        reply = {
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "seconds": round(time.monotonic() - start, 3),
        }
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
