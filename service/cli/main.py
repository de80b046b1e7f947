"""`corral` command line: `corral serve` runs the gRPC server and the REST shim in one process.

Either part can run alone: `--no-http` serves only gRPC; `--no-grpc --grpc-target HOST:PORT` runs only
the shim in front of a remote Corral service.
"""

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from pathlib import Path

from corral.store import config

log = logging.getLogger("corral")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(args) -> int:
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server, serve_in_thread
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore

    stop = threading.Event()
    grpc_server = servicer = http_server = None
    target = args.grpc_target

    if not args.no_grpc:
        from corral.service.registry import keys

        keys.load_or_create()  # like Ollama, the registry identity exists from the first start
        root = config.models_root()
        store = ModelStore(root)
        store.startup_prune()
        address = args.grpc_address or config.grpc_address()
        grpc_server, servicer, port = create_server(store, address)
        grpc_server.start()
        host = address.rsplit(":", 1)[0]
        target = target or f"{host}:{port}"
        log.info("gRPC listening on %s:%d (store %s)", host, port, root)

    if not args.no_http:
        host, port = config.ollama_host(args.http_address)
        app = create_app(target or config.grpc_target(), loopback=_is_loopback(host))
        http_server = create_http_server(app, host, port, args.http_threads)
        log.info("REST (Ollama API) listening on http://%s:%d -> gRPC %s", host, http_server.bind_addr[1], target)
        serve_in_thread(http_server)

    def _stop(signum, _frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stop.wait()
    if http_server is not None:
        http_server.stop()
    if grpc_server is not None and servicer is not None:
        grpc_server.stop(grace=5).wait()
        close_servicer(servicer)
    log.info("stopped")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="corral", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the gRPC server and the Ollama REST shim")
    p.add_argument("--grpc-address", default=None,
                   help=f"gRPC listen address (env CORRAL_GRPC_ADDRESS, default {config.DEFAULT_GRPC_ADDRESS})")
    p.add_argument("--http-address", default=None,
                   help="REST listen address (default: OLLAMA_HOST, else 127.0.0.1:11434)")
    p.add_argument("--grpc-target", default=None,
                   help="gRPC service the shim talks to (with --no-grpc; env CORRAL_GRPC_TARGET)")
    p.add_argument("--no-grpc", action="store_true", help="run only the REST shim")
    p.add_argument("--no-http", action="store_true", help="run only the gRPC server")
    p.add_argument("--http-threads", type=int, default=64, help="REST worker threads (streams hold one each)")
    c = sub.add_parser("create", help="create a model from a Modelfile on a running server")
    c.add_argument("name")
    c.add_argument("-f", "--file", default="Modelfile", help="Modelfile path (default %(default)s)")
    c.add_argument("-q", "--quantize", default="", help="quantize to this type, e.g. q4_K_M")
    c.add_argument("--grpc-target", default=None, help="gRPC server (env CORRAL_GRPC_TARGET)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if config.debug() else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        if args.no_grpc and args.no_http:
            parser.error("--no-grpc and --no-http leave nothing to run")
        try:
            config.check_all()
        except config.ConfigError as exc:
            parser.error(str(exc))
        return serve(args)
    if args.command == "create":
        from corral.service.cli.create import run_create

        return run_create(args.grpc_target or config.grpc_target(), args.name, Path(args.file), args.quantize)
    return 2


if __name__ == "__main__":
    sys.exit(main())
