"""POST /api/pull and POST /api/push: NDJSON progress streams over the Pull and Push RPCs.

Why the checks here: Ollama answers an empty pull name with 400 "invalid model name" and a push without
a name with 400 "model is required" before any stream starts; the service raises the same texts, but
answering here keeps a bad request from opening a gRPC stream at all. `username`/`password` are ignored,
as in Ollama: registry credentials come from the server's environment.
"""

from flask import Blueprint

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.rest_shim import body as b
from corral.rest_shim import translate
from corral.rest_shim.client import stub
from corral.rest_shim.errors import HTTPError
from corral.rest_shim.streaming import ndjson

bp = Blueprint("transfer", __name__)


@bp.route("/api/pull", methods=["POST"])
def pull():
    body = b.json_body("PullRequest")
    name = b.model_name(body)
    if not name:
        raise HTTPError(400, "invalid model name")
    req = pb.PullRequest(model=name, insecure=bool(b.get_bool(body, "insecure", False)))
    return ndjson(stub().Pull(req), translate.progress, stream=b.stream_flag(body))


@bp.route("/api/push", methods=["POST"])
def push():
    body = b.json_body("PushRequest")
    name = b.model_name(body)
    if not name:
        raise HTTPError(400, "model is required")
    req = pb.PushRequest(model=name, insecure=bool(b.get_bool(body, "insecure", False)))
    return ndjson(stub().Push(req), translate.progress, stream=b.stream_flag(body))
