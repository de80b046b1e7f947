"""Flask app factory: one gRPC channel per app, the route blueprints, and Ollama's error conventions."""

import grpc
from flask import Flask, Response

# Plain imports: a route module that fails to import must stop the server at start-up, not turn its
# routes into 404s.
from corral.rest_shim import (
    auth,
    guards,
    metrics,
    openai_api,
    routes_inference,
    routes_meta,
    routes_models,
    routes_transfer,
    tracing,
)
from corral.rest_shim.client import Client
from corral.rest_shim.errors import HTTPError, error_response, rpc_error_response

BLUEPRINTS = (routes_models.bp, routes_transfer.bp, routes_inference.bp, openai_api.bp, routes_meta.bp)


def create_app(grpc_target: str, loopback: bool = True, *, keys: list[str] | None = None,
               auth_metrics: bool = False, forward_auth: bool | None = None,
               credentials: grpc.ChannelCredentials | None = None, fallback_key: str = "",
               metrics_enabled: bool = True) -> Flask:
    """The shim for a gRPC target; `loopback` turns on the Host guard (only when we listen on loopback).

    `keys`: bearer keys REST callers must send (rest_shim/auth.py; /metrics too with `auth_metrics`).
    `forward_auth`: put each caller's Authorization (else `fallback_key`) on the gRPC hop; by default on
    when keys are set. `credentials`: TLS to the gRPC target. Requests are counted for /metrics (unless
    `metrics_enabled` is False: only the benchmark that measures their cost turns them off)."""
    app = Flask(__name__, static_folder=None)  # no /static/<path> route: Ollama has none
    forward = bool(keys or fallback_key) if forward_auth is None else forward_auth
    app.extensions["corral"] = Client(grpc_target, credentials, forward_auth=forward, fallback_key=fallback_key)
    if metrics_enabled:
        metrics.install(app)  # first: its hook labels the route before a guard may answer
    tracing.install(app)  # x-request-id and traceparent, before a guard may answer
    guards.install(app, loopback)
    if keys:
        auth.install(app, keys, protect_metrics=auth_metrics)
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
