"""Bearer-key authentication of REST requests, when CORRAL_API_KEYS / CORRAL_API_KEYS_FILE is set.

Ollama's and OpenAI's clients send `Authorization: Bearer <key>` when given headers / an api_key. A request
without a valid key gets 401 with Ollama's error shape ({"error": "unauthorized"}; OpenAI's shape under
/v1) and `WWW-Authenticate: Bearer`. Open without a key: `/` (the health answer "Ollama is running"),
CORS preflights (browsers send them without credentials), and /metrics unless CORRAL_AUTH_METRICS=1.
The key check is store/keys.py, shared with the gRPC side. The shim forwards the caller's header on its
gRPC hop (rest_shim/client.py), so the service checks the same key again.
"""

from collections.abc import Iterable

from flask import Response, request

from corral.rest_shim.jsonenc import dumpb
from corral.store.keys import UNAUTHORIZED, Keys

_OLLAMA_BODY = dumpb({"error": UNAUTHORIZED})
_OPENAI_BODY = dumpb({"error": {"message": UNAUTHORIZED, "type": "invalid_request_error", "param": None,
                                "code": "invalid_api_key"}})


def install(app, keys: Iterable[str], protect_metrics: bool = False) -> None:
    checker = Keys(keys)
    open_paths = {"/"} if protect_metrics else {"/", "/metrics"}

    @app.before_request
    def _authenticate():
        if request.method == "OPTIONS" or request.path in open_paths:
            return None
        if checker.accepts(request.headers.get("Authorization")):
            return None
        body = _OPENAI_BODY if request.path.startswith("/v1/") else _OLLAMA_BODY
        return Response(body, status=401, content_type="application/json; charset=utf-8",
                        headers={"WWW-Authenticate": "Bearer"})
