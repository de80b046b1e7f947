"""Flask app factory: one gRPC channel per app, the route blueprints, and Ollama's error conventions."""

import importlib
import logging

import grpc
from flask import Flask, Response

from corral.rest_shim import guards
from corral.rest_shim.client import Client
from corral.rest_shim.errors import HTTPError, error_response, rpc_error_response

log = logging.getLogger("corral.shim")

BLUEPRINTS = ("corral.rest_shim.routes_models", "corral.rest_shim.routes_transfer", "corral.rest_shim.routes_inference")


def create_app(grpc_target: str, loopback: bool = True) -> Flask:
    """The shim for a gRPC target; `loopback` turns on the Host guard (only when we listen on loopback)."""
    app = Flask(__name__)
    app.extensions["corral"] = Client(grpc_target)
    guards.install(app, loopback)
    for module_name in BLUEPRINTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            log.warning("routes %s unavailable", module_name, exc_info=True)
            continue
        app.register_blueprint(module.bp)

    @app.errorhandler(HTTPError)
    def _http_error(exc: HTTPError):
        return error_response(exc.status, exc.message)

    @app.errorhandler(grpc.RpcError)
    def _rpc_error(exc: grpc.RpcError):
        return rpc_error_response(exc)

    # Go's net/http texts, which Ollama clients see for unknown paths and wrong methods.
    @app.errorhandler(404)
    def _not_found(_):
        return Response("404 page not found", status=404, content_type="text/plain")

    @app.errorhandler(405)
    def _not_allowed(_):
        return Response("405 method not allowed", status=405, content_type="text/plain")

    return app
