"""Model creation (/api/create): the Creator and the one place its collaborators are chosen.

    creator.py   the Creator: validation before the stream, then the stream itself
    request.py   reading the request: text fields, uploaded GGUFs, the legacy Modelfile
    layers.py    the layer list being built, text and config blobs, what an overwrite leaves behind

`build_creator` is what `corral serve` (service/server.py) and the tests use, so both create models with
the same template check, quantizer, converter and adapter check.
"""

from __future__ import annotations

from corral.service.convert import convert
from corral.service.convert.adapters import validate_adapter
from corral.service.convert.quantize import normalize_type, quantize
from corral.service.create.creator import Creator, Pull
from corral.service.prompt import known, templates
from corral.store.models import ModelStore

__all__ = ["Creator", "build_creator"]


def build_creator(store: ModelStore, pull: Pull) -> Creator:
    """The Creator of a server: `pull` fetches a missing `from` model (Transfer.pull_progress)."""
    return Creator(store, validate_template=templates.validate, normalize_quant_type=normalize_type,
                   quantize=quantize, convert=convert, validate_adapter=validate_adapter, pull=pull,
                   detect_template=detect_template)


def detect_template(jinja: str) -> tuple[str, str, dict] | None:
    """A GGUF's Jinja chat template -> the closest known family's (name, Go template, parameters)."""
    found = known.named(jinja)
    return None if found is None else (found.name, found.template, dict(found.parameters))
