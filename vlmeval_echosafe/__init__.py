"""vlmeval-echosafe: MM-SafetyBench++ and the EchoSafe defense for VLMEvalKit.

Importing this package does not import VLMEvalKit (that takes ~15 s); call :func:`register` to add the
plugin's datasets and models to the host's registries.
"""

__version__ = "0.1.0"


def register() -> None:
    """Add the plugin's datasets and models to VLMEvalKit's registries (idempotent)."""
    from .vlmevalkit.registry import register as _register

    _register()


__all__ = ["register", "__version__"]
