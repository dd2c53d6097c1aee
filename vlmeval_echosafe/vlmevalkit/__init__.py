"""The VLMEvalKit adapter: registration, the launcher's runner, the host-model wrapper and every host patch.

Everything that imports ``vlmeval`` lives here (and in the launcher, which drives this package); the core
(:mod:`vlmeval_echosafe.core`) and the defenses never do.
"""
