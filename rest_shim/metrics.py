"""The shim's Prometheus metrics, and /metrics on the REST port.

Requests are counted per route template (`/api/show`, `/v1/models/<path:model>`, never the raw path, so
label values stay bounded; a path that matches no route counts as "unmatched") by method and status, and
timed until the response body is closed, so a stream's time is its whole length. The metrics live in
prometheus_client's default registry, which `corral serve` shares with the gRPC service in one process:
one scrape shows both (service/metrics.py).
"""

import threading
import time

from flask import Response, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from corral.rest_shim.streaming import OnClose

HTTP_REQUESTS = Counter("corral_http_requests", "REST requests answered, by route template, method and status.",
                        ["route", "method", "status"])
HTTP_SECONDS = Histogram("corral_http_request_duration_seconds",
                         "Time from a REST request's arrival to the end of its response body.", ["route", "method"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                  120, 300, 600))
HTTP_REFUSED = Counter("corral_http_refused", "REST requests answered 503 before the app: the server was at its "
                       "limit (busy) or draining (shutting_down).", ["reason"])
HTTP_IN_FLIGHT = Gauge("corral_http_requests_in_flight", "REST requests in progress (streams until they end).")

UNMATCHED = "unmatched"
_current = threading.local()  # the route of the request this thread is in (set during routing)
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class RouteMetrics:
    """WSGI middleware around the Flask app. The route template comes from a before_request hook, through a
    thread-local: the WSGI server calls the app in one thread, and the hook runs inside that call."""

    def __init__(self, app):
        self.app = app
        self._children: dict[tuple[str, str, str], Counter] = {}
        self._timers: dict[tuple[str, str], Histogram] = {}

    def __call__(self, environ, start_response):
        begun = time.perf_counter()
        HTTP_IN_FLIGHT.inc()
        status = ["500"]

        def start(line, headers, exc_info=None):
            status[0] = line[:3]
            return start_response(line, headers, exc_info)

        route = UNMATCHED

        def done():
            HTTP_IN_FLIGHT.dec()
            method = environ.get("REQUEST_METHOD", "")
            method = method if method in METHODS else "other"
            key = (route, method, status[0])
            counter = self._children.get(key)
            if counter is None:
                counter = self._children[key] = HTTP_REQUESTS.labels(*key)
            counter.inc()
            timer = self._timers.get(key[:2])
            if timer is None:
                timer = self._timers[key[:2]] = HTTP_SECONDS.labels(*key[:2])
            timer.observe(time.perf_counter() - begun)

        _current.route = UNMATCHED
        try:
            body = self.app(environ, start)
        except BaseException:
            route = _current.route
            done()
            raise
        route = _current.route  # the app has routed the request by now (before_request ran)
        return OnClose(body, done)


def scrape() -> Response:
    return Response(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def install(app) -> None:
    """Counts the app's requests and serves GET /metrics. Call before any other before_request hook, so
    requests that a guard answers are labelled with their route too."""

    @app.before_request
    def _route():
        rule = request.url_rule
        _current.route = rule.rule if rule is not None else UNMATCHED

    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])
    app.wsgi_app = RouteMetrics(app.wsgi_app)
