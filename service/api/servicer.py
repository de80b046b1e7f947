"""The gRPC servicer: one short method per RPC, over the store, the Creator, inference and transfers.

Business logic lives in store/ (models), service/create (create), service/engine (inference) and
service/registry (transfers); protobuf shapes are converted in api/convert.py. Every collaborator is
required, so a reader sees the whole API surface on one page and a server that starts serves every RPC.
"""

import itertools

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.service.api import convert
from corral.service.api.inference import Inference
from corral.service.api.status import cancel_event, handle_errors
from corral.service.api.transfer import Transfer
from corral.service.create import Creator
from corral.service.show import show
from corral.service.version import OLLAMA_COMPAT_VERSION
from corral.store.digests import parse_digest
from corral.store.errors import InvalidArgument, NotFound
from corral.store.models import ModelStore


class OllamaServicer(pb_grpc.OllamaServicer):
    """Implements ollama.v1.Ollama."""

    def __init__(self, store: ModelStore, creator: Creator, inference: Inference, transfer: Transfer):
        self.store = store
        self.creator = creator
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
            summaries[key] = self._summaries.get(key) or convert.model_summary(m)
        self._summaries = summaries  # unchanged models reuse their message on the next call
        return pb.ListResponse(models=list(summaries.values()))

    @handle_errors
    def Show(self, request, context):
        shown = show(self.store, request.model, verbose=request.verbose, system=convert.optional(request, "system"),
                     options=convert.options(request))
        return convert.show_response(shown)

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
        for line in self.creator.create(convert.create_request_dict(request), cancel_event(context)):
            yield convert.progress_message(line)

    # -- transfers and inference live in their own modules ---------------------------------------

    def Pull(self, request, context):
        return self.transfer.Pull(request, context)

    def Push(self, request, context):
        return self.transfer.Push(request, context)

    def Embed(self, request, context):
        return self.inference.Embed(request, context)

    def Embeddings(self, request, context):
        return self.inference.Embeddings(request, context)

    def ListRunning(self, request, context):
        return self.inference.ListRunning(request, context)

    def Generate(self, request, context):
        return self.inference.Generate(request, context)

    def Chat(self, request, context):
        return self.inference.Chat(request, context)
