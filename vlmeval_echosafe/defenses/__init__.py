"""Defenses: VLMEvalKit models that wrap another model behind one interface (``base.Defense``)."""
