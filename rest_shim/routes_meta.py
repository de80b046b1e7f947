"""Routes about the API itself, and the app-wide JSON error bodies.

GET /api/openapi.json serves the committed OpenAPI document (rest_shim/openapi.py generates it). The error
handlers make every error the shim answers Ollama's JSON shape `{"error": text}`: an unexpected exception
becomes a 500 with a short text (never Werkzeug's HTML page, never a traceback), and Werkzeug's own
HTTP errors (413 past the body limit, 400 for a request it cannot parse) keep their status with a JSON
body. 404 and 405 keep Go's plain texts (rest_shim/app.py).
"""

import logging

from flask import Blueprint, Response
from werkzeug.exceptions import HTTPException, InternalServerError

from corral.rest_shim.errors import error_response
from corral.rest_shim.openapi import DOCUMENT

bp = Blueprint("meta", __name__)
log = logging.getLogger("corral.rest_shim")
_document: bytes | None = None


@bp.route("/api/openapi.json", methods=["GET"])
def openapi_document():
    global _document
    if _document is None:
        _document = DOCUMENT.read_bytes()
    return Response(_document, content_type="application/json; charset=utf-8")


@bp.app_errorhandler(InternalServerError)
def _internal_error(exc: InternalServerError):
    original = getattr(exc, "original_exception", None)
    if original is not None:
        log.error("internal error", exc_info=original)
    return error_response(500, "internal server error")


@bp.app_errorhandler(HTTPException)
def _http_exception(exc: HTTPException):
    code = exc.code or 500
    if code == 404:
        return Response("404 page not found", status=404, content_type="text/plain")
    if code == 405:
        return Response("405 method not allowed", status=405, content_type="text/plain")
    return error_response(code, (exc.description or exc.name or "error").split("\n")[0][:200])
