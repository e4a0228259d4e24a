"""Renderers from the model to provider resources: one per target."""
