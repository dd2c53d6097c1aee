"""EchoSafe Guard: an OpenAI-compatible proxy that runs EchoSafe on every request in front of any
OpenAI-compatible VLM server, with one memory per tenant that keeps learning while deployed (docs/guard.md).

``vlmeval-echosafe serve ...`` (:mod:`.cli`) builds a :class:`~.guard.Guard` (the defense, the tenants' banks,
the reflection queue) and serves :func:`~.app.create_app` with uvicorn.
"""
