"""/api/show: the store describes a model, the service judges its capabilities.

Why the split: capabilities follow template rules that generate and chat check too
(service/prompt/capabilities.py), so they are computed in the service, once per model, from the same
loaded model the store describes.
"""

from __future__ import annotations

from corral.service.prompt.capabilities import model_capabilities
from corral.store.models import LoadedModel, ModelStore


def show(store: ModelStore, name_text: str, verbose: bool = False, system: str | None = None,
         options: dict | None = None) -> dict:
    """The /api/show response as a dict (see ModelStore.show)."""
    return describe(store, store.find(name_text), verbose=verbose, system=system, options=options)


def describe(store: ModelStore, model: LoadedModel, verbose: bool = False, system: str | None = None,
             options: dict | None = None) -> dict:
    """The /api/show response as a dict for a model store.find() returned."""
    return store.show(model, model_capabilities(model), verbose=verbose, system=system, options=options)
