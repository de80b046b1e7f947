"""Flask app factory: one gRPC channel per app, the route blueprints, and Ollama's error conventions."""

import grpc
from flask import Flask, Response

# Plain imports: a route module that fails to import must stop the server at start-up, not turn its
# routes into 404s.
from corral.rest_shim import guards, openai_api, routes_inference, routes_models, routes_transfer
from corral.rest_shim.client import Client
from corral.rest_shim.errors import HTTPError, error_response, rpc_error_response

BLUEPRINTS = (routes_models.bp, routes_transfer.bp, routes_inference.bp, openai_api.bp)


def create_app(grpc_target: str, loopback: bool = True) -> Flask:
    """The shim for a gRPC target; `loopback` turns on the Host guard (only when we listen on loopback)."""
    app = Flask(__name__, static_folder=None)  # no /static/<path> route: Ollama has none
    app.extensions["corral"] = Client(grpc_target)
    guards.install(app, loopback)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)

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
