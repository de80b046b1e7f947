"""The gRPC servicer: one short method per RPC, over the store, the Creator, inference and transfers.

Business logic lives in store/ (models), service/create (create), service/engine (inference) and
service/registry (transfers); protobuf shapes are converted in api/convert.py. Every collaborator is
required, so a reader sees the whole API surface on one page and a server that starts serves every RPC.
"""

import threading
from collections import OrderedDict

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.service.api import blob_upload, convert
from corral.service.api.inference import Inference
from corral.service.api.status import cancel_event, handle_errors
from corral.service.api.transfer import Transfer
from corral.service.create import Creator
from corral.service.show import describe
from corral.service.version import OLLAMA_COMPAT_VERSION
from corral.store.digests import parse_digest
from corral.store.errors import CorralError, InvalidArgument, NotFound
from corral.store.models import LoadedModel, ModelStore

SHOWN_CACHE_SIZE = 64  # ShowResponses kept (non-verbose only: a verbose one can hold a whole vocabulary)


class OllamaServicer(pb_grpc.OllamaServicer):
    """Implements ollama.v1.Ollama."""

    def __init__(self, store: ModelStore, creator: Creator, inference: Inference, transfer: Transfer):
        self.store = store
        self.creator = creator
        self.inference = inference
        self.transfer = transfer
        self._summaries: dict[tuple, pb.ModelSummary] = {}
        self._listed: tuple[list, pb.ListResponse] | None = None  # (the store's listing, its response)
        self._shown: OrderedDict[int, tuple[LoadedModel, pb.ShowResponse]] = OrderedDict()
        self._shown_lock = threading.Lock()

    # -- model management ------------------------------------------------------------------------

    @handle_errors
    def Version(self, request, context):
        return pb.VersionResponse(version=OLLAMA_COMPAT_VERSION)

    @handle_errors
    def List(self, request, context):
        listing = self.store.list_models()  # the same list object while no manifest changed
        listed = self._listed
        if listed is not None and listed[0] is listing:
            return listed[1]
        summaries = {}
        for m in listing:
            key = (m["name"], m["digest"], m["modified_at"])
            summaries[key] = self._summaries.get(key) or convert.model_summary(m)
        self._summaries = summaries  # unchanged models reuse their message on the next call
        response = pb.ListResponse(models=list(summaries.values()))
        self._listed = (listing, response)
        return response

    @handle_errors
    def Show(self, request, context):
        system, options = convert.optional(request, "system"), convert.options(request)
        model = self.store.find(request.model)  # the same object while its manifest is unchanged
        plain = system is None and options is None and not request.verbose
        if plain:
            with self._shown_lock:
                hit = self._shown.get(id(model))
            if hit is not None and hit[0] is model:
                return hit[1]
        response = convert.show_response(describe(self.store, model, verbose=request.verbose, system=system,
                                                  options=options))
        if plain:
            with self._shown_lock:
                self._shown[id(model)] = (model, response)
                while len(self._shown) > SHOWN_CACHE_SIZE:
                    self._shown.popitem(last=False)
        return response

    @handle_errors
    def Copy(self, request, context):
        self.store.copy(request.source, request.destination)
        return pb.CopyResponse()

    @handle_errors
    def Delete(self, request, context):
        try:  # looked up before the manifest goes; a name that is no runnable model has no runner
            spec = self.inference.engine.spec(request.model, "")
        except CorralError:
            spec = None
        self.store.delete(request.model)
        if spec is not None:
            self.inference.engine.unload(spec)  # as `ollama rm`: the runner goes once it is idle
        return pb.DeleteResponse()

    @handle_errors
    def BlobExists(self, request, context):
        digest = parse_digest(request.digest)
        if not self.store.blobs.intact(digest):  # a damaged blob is missing: the client uploads it again
            raise NotFound(f'blob "{request.digest}" not found')
        return pb.BlobExistsResponse()

    @handle_errors
    def PushBlob(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or not first.digest:
            raise InvalidArgument("invalid digest format")
        digest = parse_digest(first.digest)
        if self.store.blobs.intact(digest):  # a damaged one is replaced by the bytes sent
            return pb.PushBlobResponse(created=False, digest=digest)
        # data: read-only views of the received messages; a large upload waits for a slot, then is
        # received ahead on a thread while it is hashed and written (api/blob_upload.py)
        with blob_upload.upload(first, request_iterator) as (chunks, large):
            stored, created = self.store.blobs.write(chunks, expected=digest, prefetch=large)
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

    def EmbedStream(self, request_iterator, context):
        return self.inference.EmbedStream(request_iterator, context)

    def ListRunning(self, request, context):
        return self.inference.ListRunning(request, context)

    def Generate(self, request, context):
        return self.inference.Generate(request, context)

    def Chat(self, request, context):
        return self.inference.Chat(request, context)
