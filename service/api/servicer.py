"""The gRPC servicer: one short method per RPC, translating protobuf to and from the store's dicts.

Business logic lives in store/ (models), service/engine (inference) and service/registry (transfers);
this class only adapts shapes, so a reader sees the whole API surface on one page.
"""

import itertools

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.service.api.status import (cancel_event, dict_to_struct, handle_errors, progress_message, struct_to_dict,
                            timestamp)
from corral.service.version import OLLAMA_COMPAT_VERSION
from corral.store.digests import parse_digest
from corral.store.errors import InvalidArgument, NotFound
from corral.store.models import ModelStore


def details_message(details: dict) -> pb.ModelDetails:
    return pb.ModelDetails(
        parent_model=details.get("parent_model") or "",
        format=details.get("format") or "",
        family=details.get("family") or "",
        families=details.get("families") or [],
        parameter_size=details.get("parameter_size") or "",
        quantization_level=details.get("quantization_level") or "",
    )


def message_dicts(messages) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages]


def create_request_dict(request: pb.CreateRequest) -> dict:
    """CreateRequest -> the Ollama JSON create request the store understands (unset fields absent)."""
    req = {"model": request.model}
    for key in ("from", "quantize", "modelfile", "path"):
        if getattr(request, key):
            req[key] = getattr(request, key)
    if request.files:
        req["files"] = dict(request.files)
    if request.adapters:
        req["adapters"] = dict(request.adapters)
    for key in ("template", "system"):
        if request.HasField(key):
            req[key] = getattr(request, key)
    if request.license:
        req["license"] = list(request.license)
    if request.HasField("parameters"):
        req["parameters"] = struct_to_dict(request.parameters)
    if request.messages:
        req["messages"] = message_dicts(request.messages)
    return req


class OllamaServicer(pb_grpc.OllamaServicer):
    """Implements ollama.v1.Ollama over a ModelStore, an inference engine and a registry client."""

    def __init__(self, store: ModelStore, inference=None, transfer=None):
        self.store = store
        self.inference = inference
        self.transfer = transfer
        self._summaries: dict[tuple, pb.ModelSummary] = {}

    # -- model management ------------------------------------------------------------------------

    @handle_errors
    def Version(self, request, context):
        return pb.VersionResponse(version=OLLAMA_COMPAT_VERSION)

    @handle_errors
    def List(self, request, context):
        summaries = {}
        for m in self.store.list_models():
            key = (m["name"], m["digest"], m["modified_at"])
            summaries[key] = self._summaries.get(key) or pb.ModelSummary(
                name=m["name"],
                model=m["model"],
                modified_at=timestamp(m["modified_at"]),
                size=m["size"],
                digest=m["digest"],
                details=details_message(m["details"]),
            )
        self._summaries = summaries  # unchanged models reuse their message on the next call
        return pb.ListResponse(models=list(summaries.values()))

    @handle_errors
    def Show(self, request, context):
        shown = self.store.show(
            request.model,
            verbose=request.verbose,
            system=request.system if request.HasField("system") else None,
            options=struct_to_dict(request.options) if request.HasField("options") else None,
        )
        response = pb.ShowResponse(
            license=shown.get("license") or "",
            modelfile=shown.get("modelfile") or "",
            parameters=shown.get("parameters") or "",
            template=shown.get("template") or "",
            system=shown.get("system") or "",
            details=details_message(shown.get("details") or {}),
            messages=[pb.Message(role=m["role"], content=m["content"]) for m in shown.get("messages") or []],
            model_info=dict_to_struct(shown.get("model_info") or {}),
            tensors=[
                pb.Tensor(name=t["name"], type=t["type"], shape=t["shape"]) for t in shown.get("tensors") or []
            ],
            capabilities=shown.get("capabilities") or [],
            modified_at=timestamp(shown["modified_at"]),
        )
        if shown.get("projector_info"):
            response.projector_info.CopyFrom(dict_to_struct(shown["projector_info"]))
        return response

    @handle_errors
    def Copy(self, request, context):
        self.store.copy(request.source, request.destination)
        return pb.CopyResponse()

    @handle_errors
    def Delete(self, request, context):
        self.store.delete(request.model)
        return pb.DeleteResponse()

    @handle_errors
    def BlobExists(self, request, context):
        digest = parse_digest(request.digest)
        if not self.store.blobs.has(digest):
            raise NotFound(f'blob "{request.digest}" not found')
        return pb.BlobExistsResponse()

    @handle_errors
    def PushBlob(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or not first.digest:
            raise InvalidArgument("invalid digest format")
        digest = parse_digest(first.digest)
        if self.store.blobs.has(digest):
            return pb.PushBlobResponse(created=False, digest=digest)
        chunks = itertools.chain([first.data], (m.data for m in request_iterator))
        stored, created = self.store.blobs.write(chunks, expected=digest)
        return pb.PushBlobResponse(created=created, digest=stored)

    @handle_errors
    def Create(self, request, context):
        for line in self.store.create(create_request_dict(request), pull=self._puller(request, context)):
            yield progress_message(line)

    def _puller(self, request, context):
        """A missing base model is pulled first, its lines inside the create stream."""
        if self.transfer is None:
            return None
        cancel = cancel_event(context)
        return lambda name: self.transfer.pull_progress(name.full, request.insecure, cancel)

    # -- transfers and inference live in their own modules ---------------------------------------

    def Pull(self, request, context):
        return self._delegate(self.transfer, "Pull", request, context)

    def Push(self, request, context):
        return self._delegate(self.transfer, "Push", request, context)

    def Embed(self, request, context):
        return self._delegate(self.inference, "Embed", request, context)

    def Embeddings(self, request, context):
        return self._delegate(self.inference, "Embeddings", request, context)

    def ListRunning(self, request, context):
        return self._delegate(self.inference, "ListRunning", request, context)

    def Generate(self, request, context):
        return self._delegate(self.inference, "Generate", request, context)

    def Chat(self, request, context):
        return self._delegate(self.inference, "Chat", request, context)

    def _delegate(self, target, name, request, context):
        if target is None:
            return getattr(super(), name)(request, context)  # UNIMPLEMENTED
        return getattr(target, name)(request, context)
