"""Every environment variable Corral reads, in one place: names, defaults, validation, Ollama's rules.

Why one module: Ollama's users configure a server with its variables (OLLAMA_HOST, OLLAMA_MODELS,
OLLAMA_KEEP_ALIVE, ...), read by Go's envconfig rules (values trimmed of spaces, then of quotes; booleans
through ParseBool; durations as Go strings or bare seconds). Read in several places those rules drift,
and a typo would silently become a default. Here each variable has one reader, and a bad value raises
ConfigError naming the variable; `corral serve` calls check_all() at start-up so it refuses to start.

Why in the store package: the store is the bottom layer that the service, the REST shim (which may run
alone) and the CLI all import already, and it has no dependencies, so every layer reads settings the
same way without the store importing the service. Values are read when asked for, not frozen at import:
a test or a child process that sets a variable sees it at the next use.

This is the only module that touches os.environ.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from corral.store.gocompat import parse_go_duration

DEFAULT_GRPC_ADDRESS = "127.0.0.1:50051"
DEFAULT_KEEP_ALIVE = 300.0
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class ConfigError(ValueError):
    """A variable's value cannot be used; the message names the variable and the value."""


def raw(name: str) -> str:
    """A variable as Ollama's envconfig.Var reads it: trimmed of spaces, then of quotes."""
    return os.environ.get(name, "").strip().strip("\"'").strip()


def _int(name: str, default: int, minimum: int | None = None) -> int:
    value = raw(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}: invalid integer {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}: {value!r} is below the minimum {minimum}")
    return number


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    value = raw(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}: invalid number {value!r}") from None
    if not math.isfinite(number) or number < minimum:
        raise ConfigError(f"{name}: {value!r} is out of range")
    return number


def _bool(name: str) -> bool:
    """Go's ParseBool, as Ollama's envconfig.Bool: an unparsable non-empty value counts as true."""
    value = raw(name)
    return bool(value) and value not in _FALSE


# -- the store ------------------------------------------------------------------------------------

def models_root() -> Path:
    """OLLAMA_MODELS, else ~/.ollama/models (spec §3, §10)."""
    configured = raw("OLLAMA_MODELS")
    return Path(configured) if configured else Path.home() / ".ollama" / "models"


def noprune() -> bool:
    """OLLAMA_NOPRUNE: keep unreferenced blobs at start-up and after overwrites."""
    return _bool("OLLAMA_NOPRUNE")


# -- addresses --------------------------------------------------------------------------------------

def ollama_host(value: str | None = None) -> tuple[str, int]:
    """OLLAMA_HOST (or `value`) as Ollama reads it: [http(s)://]host[:port][/path], default 127.0.0.1:11434."""
    text = (value if value is not None else raw("OLLAMA_HOST")).strip().strip("\"'")
    if not text:
        return "127.0.0.1", 11434
    scheme_given = "://" in text
    try:
        parts = urlsplit(text if scheme_given else "http://" + text)
        port = parts.port
    except ValueError:
        raise ConfigError(f"OLLAMA_HOST: invalid address {text!r}") from None
    default_port = {"http": 80, "https": 443}.get(parts.scheme, 11434) if scheme_given else 11434
    return parts.hostname or "127.0.0.1", port if port is not None else default_port  # :0 = any free port


def grpc_address() -> str:
    """CORRAL_GRPC_ADDRESS: where `corral serve` listens for gRPC."""
    return raw("CORRAL_GRPC_ADDRESS") or DEFAULT_GRPC_ADDRESS


def grpc_target() -> str:
    """CORRAL_GRPC_TARGET: the gRPC server a shim-only `corral serve` or the CLI talks to."""
    return raw("CORRAL_GRPC_TARGET") or DEFAULT_GRPC_ADDRESS


def cli_grpc_target() -> str:
    """Where the `corral` client commands reach the server: CORRAL_GRPC_TARGET, else OLLAMA_HOST's host with
    the default gRPC port (a wildcard host means this machine), else 127.0.0.1:50051."""
    target = raw("CORRAL_GRPC_TARGET")
    if target:
        return target
    if not raw("OLLAMA_HOST"):
        return DEFAULT_GRPC_ADDRESS
    host, _ = ollama_host()
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    port = DEFAULT_GRPC_ADDRESS.rsplit(":", 1)[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def origins() -> list[str]:
    """OLLAMA_ORIGINS: extra browser origins allowed by CORS (comma-separated, '*' globs)."""
    return [o.strip() for o in os.environ.get("OLLAMA_ORIGINS", "").split(",") if o.strip()]


def debug() -> bool:
    """OLLAMA_DEBUG: debug logging."""
    return raw("OLLAMA_DEBUG") not in ("", "0", "false")


# -- the engine -------------------------------------------------------------------------------------

# Go's largest time.Duration (about 292 years): a longer keep-alive is forever, as an expiry date past it
# (ten thousand years) is past what a date can hold and broke /api/ps for every caller.
MAX_KEEP_ALIVE_SECONDS = (2**63 - 1) / 1e9


def keep_alive_seconds(value: float | None) -> float | None:
    """Normalises a keep-alive: negative (or absurdly large) means forever (None), else seconds >= 0."""
    if value is None or value < 0 or not math.isfinite(value) or value > MAX_KEEP_ALIVE_SECONDS:
        return None
    return float(value)


def keep_alive() -> float | None:
    """OLLAMA_KEEP_ALIVE: a Go duration or integer seconds; negative = forever (None)."""
    value = raw("OLLAMA_KEEP_ALIVE")
    if not value:
        return DEFAULT_KEEP_ALIVE
    try:
        return keep_alive_seconds(float(int(value)))
    except ValueError:
        pass
    try:
        return keep_alive_seconds(parse_go_duration(value))
    except ValueError:
        raise ConfigError(f"OLLAMA_KEEP_ALIVE: invalid duration {value!r}") from None


@dataclass
class EngineConfig:
    """Defaults the scheduler and the options merge start from (spec §10)."""

    keep_alive: float | None = DEFAULT_KEEP_ALIVE  # seconds; None = forever
    max_loaded_models: int = 3  # OLLAMA_MAX_LOADED_MODELS 0 = auto = 3 on CPU
    num_parallel: int = 1
    max_queue: int = 512
    context_length: int = 4096  # OLLAMA_CONTEXT_LENGTH 0 = automatic = 4096 without a GPU
    memory_budget: int | None = None  # bytes; None = only max_loaded_models limits what stays loaded
    threads: int | None = None  # default n_threads; None = os.cpu_count()
    embed_pack_tokens: int = 32  # inputs shorter than this share one decode (see engine/embedding.py)

    @classmethod
    def from_env(cls) -> EngineConfig:
        return cls(
            keep_alive=keep_alive(),
            max_loaded_models=_int("OLLAMA_MAX_LOADED_MODELS", 0, minimum=0) or 3,
            num_parallel=_int("OLLAMA_NUM_PARALLEL", 0, minimum=0) or 1,
            max_queue=_int("OLLAMA_MAX_QUEUE", 0, minimum=0) or 512,
            context_length=_int("OLLAMA_CONTEXT_LENGTH", 0, minimum=0) or 4096,
            memory_budget=_int("CORRAL_MAX_MEMORY", 0, minimum=0) or None,
            embed_pack_tokens=_int("CORRAL_EMBED_PACK_TOKENS", 32, minimum=1),
        )


@dataclass
class Capacity:
    """How many requests `corral serve` holds at once. Both servers give each request a thread, so these
    numbers size the gRPC executor, gRPC's maximum_concurrent_rpcs and the REST admission gate alike.

    inference: requests waiting for a runner (OLLAMA_MAX_QUEUE, which the scheduler enforces with the same
    503 text) plus those running on one (OLLAMA_MAX_LOADED_MODELS x OLLAMA_NUM_PARALLEL). other: every
    other request at once (CORRAL_MAX_OTHER_REQUESTS, default 64: lists, shows, uploads, pulls). Past
    `requests`, callers are refused at once with Ollama's 503 "server busy" instead of waiting in a queue.
    """

    inference: int
    other: int = 64

    @property
    def requests(self) -> int:
        return self.inference + self.other

    @classmethod
    def from_env(cls) -> Capacity:
        engine = EngineConfig.from_env()
        return cls(inference=engine.max_queue + engine.max_loaded_models * engine.num_parallel,
                   other=_int("CORRAL_MAX_OTHER_REQUESTS", 64, minimum=1))


def runner_quiet() -> bool:
    """CORRAL_RUNNER_QUIET: runner children drop llama.cpp's error log lines (tests that provoke them)."""
    return raw("CORRAL_RUNNER_QUIET") == "1"


def runner_library_defaults() -> None:
    """Set in a runner child before llama.cpp loads: ggml would run gdb on an abort (slow, and noise)."""
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")


# -- the registry client ----------------------------------------------------------------------------

@dataclass
class RegistryTuning:
    """CORRAL_REGISTRY_*: download part size and parallelism, retries, stall timeout."""

    part_size: int = 0  # 0: the client chooses by blob size
    streams: int = 16
    retries: int = 6
    stall_timeout: float = 30.0
    connect_timeout: float = 30.0
    backoff: float = 1.0

    @classmethod
    def from_env(cls) -> RegistryTuning:
        return cls(
            part_size=_int("CORRAL_REGISTRY_PART_SIZE", 0, minimum=0),
            streams=_int("CORRAL_REGISTRY_STREAMS", 16, minimum=1),
            retries=_int("CORRAL_REGISTRY_RETRIES", 6, minimum=1),
            stall_timeout=_float("CORRAL_REGISTRY_STALL_TIMEOUT", 30.0),
        )


def registry_credentials() -> tuple[str, str] | None:
    """OLLAMA_REGISTRY_USERNAME / OLLAMA_REGISTRY_PASSWORD: Basic credentials for every registry."""
    user = os.environ.get("OLLAMA_REGISTRY_USERNAME")
    return (user, os.environ.get("OLLAMA_REGISTRY_PASSWORD", "")) if user else None


def docker_config_path() -> Path:
    """$DOCKER_CONFIG/config.json, else ~/.docker/config.json (docker's own rule)."""
    configured = os.environ.get("DOCKER_CONFIG")
    return Path(configured) / "config.json" if configured else Path.home() / ".docker" / "config.json"


# -- operating: metrics, auth, TLS, drain, gRPC transport (README "Operating Corral") -----------------

def metrics_address() -> tuple[str, int] | None:
    """CORRAL_METRICS_ADDRESS: HOST:PORT of a separate Prometheus /metrics listener (unset: none; /metrics
    is on the REST port either way)."""
    value = raw("CORRAL_METRICS_ADDRESS")
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"CORRAL_METRICS_ADDRESS: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _keys_from(text: str, name: str) -> list[str]:
    keys = []
    for line in text.replace(",", "\n").splitlines():
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if any(c.isspace() for c in key):
            raise ConfigError(f"{name}: a key contains white space")
        keys.append(key)
    return keys


def api_keys() -> list[str]:
    """CORRAL_API_KEYS (comma-separated) and CORRAL_API_KEYS_FILE (one key per line, '#' comments): the
    bearer keys the server accepts. Empty: no authentication (the default)."""
    keys = _keys_from(raw("CORRAL_API_KEYS"), "CORRAL_API_KEYS")
    path = raw("CORRAL_API_KEYS_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"CORRAL_API_KEYS_FILE: cannot read {path!r}: {exc.strerror or exc}") from None
        file_keys = _keys_from(text, "CORRAL_API_KEYS_FILE")
        if not file_keys:
            raise ConfigError(f"CORRAL_API_KEYS_FILE: {path!r} holds no key")
        keys += file_keys
    return keys


def auth_metrics() -> bool:
    """CORRAL_AUTH_METRICS=1: /metrics needs a key too (health stays open)."""
    return _bool("CORRAL_AUTH_METRICS")


def client_api_key() -> str:
    """CORRAL_API_KEY: the key a client of Corral sends (a shim-only serve when its caller sent none)."""
    return raw("CORRAL_API_KEY")


def drain_seconds() -> float:
    """CORRAL_DRAIN_SECONDS: on SIGTERM, how long requests in flight may run before the server stops."""
    return _float("CORRAL_DRAIN_SECONDS", 30.0)


def tls_files() -> tuple[str, str, str]:
    """CORRAL_TLS_CERT, CORRAL_TLS_KEY, CORRAL_TLS_CLIENT_CA: defaults of serve's --tls-* options."""
    return raw("CORRAL_TLS_CERT"), raw("CORRAL_TLS_KEY"), raw("CORRAL_TLS_CLIENT_CA")


DEFAULT_GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


@dataclass
class GrpcTransport:
    """The gRPC server's message limit and keepalive (seconds; 0 = gRPC's default).

    max_message_bytes: CORRAL_GRPC_MAX_MESSAGE_BYTES (default 256 MiB: a verbose Show of a large vocabulary
    is bigger than gRPC's 4 MiB). keepalive_time: CORRAL_GRPC_KEEPALIVE_TIME, how often the server pings an
    idle connection; keepalive_timeout: CORRAL_GRPC_KEEPALIVE_TIMEOUT, how long it waits for the answer;
    min_ping_interval: CORRAL_GRPC_MIN_PING_INTERVAL, the shortest interval it allows between a client's
    pings (clients behind proxies that ping often need it lowered, else gRPC closes them with ENHANCE_YOUR_CALM).
    max_streams: CORRAL_GRPC_MAX_STREAMS, the concurrent calls (HTTP/2 streams) one connection may open;
    calls past it wait in the client for a stream. 0 (default): the server's capacity plus a few, so that
    one connection can use the whole server and a caller past capacity still hears "busy" at once.
    """

    max_message_bytes: int = DEFAULT_GRPC_MAX_MESSAGE_BYTES
    keepalive_time: float = 0.0
    keepalive_timeout: float = 0.0
    min_ping_interval: float = 0.0
    max_streams: int = 0

    @classmethod
    def from_env(cls) -> GrpcTransport:
        return cls(
            max_message_bytes=_int("CORRAL_GRPC_MAX_MESSAGE_BYTES", DEFAULT_GRPC_MAX_MESSAGE_BYTES, minimum=1024),
            keepalive_time=_float("CORRAL_GRPC_KEEPALIVE_TIME", 0.0),
            keepalive_timeout=_float("CORRAL_GRPC_KEEPALIVE_TIMEOUT", 0.0),
            min_ping_interval=_float("CORRAL_GRPC_MIN_PING_INTERVAL", 0.0),
            max_streams=_int("CORRAL_GRPC_MAX_STREAMS", 0, minimum=0),
        )


# -- request limits (the REST shim) ----------------------------------------------------------------

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# Nesting past this depth is refused (400): protobuf parses at most 100 levels of messages and each JSON
# object level inside a Struct costs three (map entry, Value, Struct).
DEFAULT_MAX_JSON_DEPTH = 32


def max_body_bytes() -> int:
    """CORRAL_MAX_BODY_BYTES: the largest JSON request body the REST shim reads (413 past it, refused
    from Content-Length before reading); blob uploads are not limited by it."""
    return _int("CORRAL_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1024)


def max_json_depth() -> int:
    """CORRAL_MAX_JSON_DEPTH: how deeply a JSON request body may nest arrays and objects (400 past it)."""
    depth = _int("CORRAL_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH, minimum=4)
    if depth > DEFAULT_MAX_JSON_DEPTH:
        raise ConfigError(f"CORRAL_MAX_JSON_DEPTH: {depth} is above the maximum {DEFAULT_MAX_JSON_DEPTH}")
    return depth


# -- request limits (issue 13 "Limits"): what one request may ask of the service, and of the REST listener --

# A request's options may not load a runner bigger than this (a context, a batch) nor ask for more tokens.
# num_ctx: 131072 is the trained length of the long-context models in common use (Llama 3.1+, Qwen 2.5/3,
# Mistral Nemo) that Ollama users raise num_ctx to; an 8B model's f16 KV cache at that length is 16 GiB,
# which with its weights still fits a 24 GiB machine, while a 1M-token request (Qwen2.5-1M, Llama 4) would
# ask for 128 GiB. num_batch: 8192 covers the 8k-context encoders (nomic-embed, bge-m3) that need it to
# embed a long input whole; runners use it as n_ubatch too, and the compute buffers grow with it.
DEFAULT_MAX_NUM_CTX = 131072
DEFAULT_MAX_NUM_BATCH = 8192
DEFAULT_MAX_NUM_PREDICT = 131072
# The text of one generate or chat request: 8 MiB is 8 to 16 times what the largest context above holds
# (4-8 bytes a token), room for a long conversation that truncation cuts down, and bounds the tokenizing
# and template rendering one request can cost.
DEFAULT_MAX_PROMPT_BYTES = 8 * 1024 * 1024
# Embed: Ollama has no limit and clients send whole document lists at once (LangChain's embed_documents),
# so the count is bounded by what the answer costs: over gRPC the vectors stream out as they are made, but
# the REST answer is assembled whole, about 12 bytes of JSON a dimension: 65536 inputs of 1024 dimensions
# is 800 MB, where the 11 million empty strings a 32 MiB body can hold would be far past any machine.
# The bytes bound what is tokenized (and held) at once: 16 MiB is half the largest REST body.
DEFAULT_MAX_EMBED_INPUTS = 65536
DEFAULT_MAX_EMBED_BYTES = 16 * 1024 * 1024


@dataclass
class RequestLimits:
    """What one inference request may ask, enforced by the service (gRPC and REST alike; 400 past them).

    max_num_ctx / max_num_batch / max_num_predict: CORRAL_MAX_NUM_CTX, CORRAL_MAX_NUM_BATCH,
    CORRAL_MAX_NUM_PREDICT, the largest values a request's `options` may set (num_predict -1 and -2,
    "unlimited" and "fill the context", stay allowed). max_prompt_bytes: CORRAL_MAX_PROMPT_BYTES, the text
    of a generate or chat request (prompt, suffix, system, template, messages, tools; context ids count 4
    bytes each; images do not count). max_embed_inputs / max_embed_bytes: CORRAL_MAX_EMBED_INPUTS and
    CORRAL_MAX_EMBED_BYTES, the inputs of one embed request and their total size (token ids 4 bytes each);
    an EmbedStream item, or a legacy embeddings prompt, may be max_embed_bytes long.
    """

    max_num_ctx: int = DEFAULT_MAX_NUM_CTX
    max_num_batch: int = DEFAULT_MAX_NUM_BATCH
    max_num_predict: int = DEFAULT_MAX_NUM_PREDICT
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES
    max_embed_inputs: int = DEFAULT_MAX_EMBED_INPUTS
    max_embed_bytes: int = DEFAULT_MAX_EMBED_BYTES

    @classmethod
    def from_env(cls) -> RequestLimits:
        return cls(
            max_num_ctx=_int("CORRAL_MAX_NUM_CTX", DEFAULT_MAX_NUM_CTX, minimum=1),
            max_num_batch=_int("CORRAL_MAX_NUM_BATCH", DEFAULT_MAX_NUM_BATCH, minimum=1),
            max_num_predict=_int("CORRAL_MAX_NUM_PREDICT", DEFAULT_MAX_NUM_PREDICT, minimum=1),
            max_prompt_bytes=_int("CORRAL_MAX_PROMPT_BYTES", DEFAULT_MAX_PROMPT_BYTES, minimum=1),
            max_embed_inputs=_int("CORRAL_MAX_EMBED_INPUTS", DEFAULT_MAX_EMBED_INPUTS, minimum=1),
            max_embed_bytes=_int("CORRAL_MAX_EMBED_BYTES", DEFAULT_MAX_EMBED_BYTES, minimum=1),
        )


DEFAULT_LISTEN_BACKLOG = 1024
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_REQUEST_READ_TIMEOUT = 60.0
DEFAULT_REQUEST_MIN_RATE = 16 * 1024


@dataclass
class HttpLimits:
    """The REST listener's defences (rest_shim/http.py, rest_shim/reading.py).

    listen_backlog: CORRAL_LISTEN_BACKLOG, connections the kernel queues before they are accepted (a burst
    of clients; the kernel caps it at net.core.somaxconn). max_header_bytes: CORRAL_MAX_HEADER_BYTES, the
    request line and headers together (414 or 431 past it). read_timeout: CORRAL_REQUEST_READ_TIMEOUT
    (seconds), how long the server waits for a request's headers and body; min_rate:
    CORRAL_REQUEST_MIN_RATE (bytes/s), a body arriving at least this fast gets another read_timeout each
    time it has sent read_timeout x min_rate bytes (so a large upload that keeps moving is never cut);
    0: the whole request within read_timeout.
    """

    listen_backlog: int = DEFAULT_LISTEN_BACKLOG
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    read_timeout: float = DEFAULT_REQUEST_READ_TIMEOUT
    min_rate: int = DEFAULT_REQUEST_MIN_RATE

    @classmethod
    def from_env(cls) -> HttpLimits:
        read_timeout = _float("CORRAL_REQUEST_READ_TIMEOUT", DEFAULT_REQUEST_READ_TIMEOUT)
        if read_timeout <= 0:
            raise ConfigError(f"CORRAL_REQUEST_READ_TIMEOUT: {read_timeout!r} is out of range")
        return cls(
            listen_backlog=_int("CORRAL_LISTEN_BACKLOG", DEFAULT_LISTEN_BACKLOG, minimum=1),
            max_header_bytes=_int("CORRAL_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES, minimum=1024),
            read_timeout=read_timeout,
            min_rate=_int("CORRAL_REQUEST_MIN_RATE", DEFAULT_REQUEST_MIN_RATE, minimum=0),
        )


# -- scale-out and observability (service/pull_on_demand.py, service/observability.py) ---------------

def pull_on_demand() -> bool:
    """CORRAL_PULL_ON_DEMAND=1: a model a request names and the store lacks is pulled from the registry
    its name points to before the request is served (once; concurrent requests for it wait)."""
    return _bool("CORRAL_PULL_ON_DEMAND")


def pull_insecure() -> bool:
    """CORRAL_PULL_INSECURE=1: those pulls use plain HTTP (a registry without TLS), as `pull --insecure`."""
    return _bool("CORRAL_PULL_INSECURE")


LOG_FORMATS = ("text", "json")


def log_format() -> str:
    """CORRAL_LOG_FORMAT: `text` (default) or `json` (one JSON object per log line)."""
    value = raw("CORRAL_LOG_FORMAT").lower() or "text"
    if value not in LOG_FORMATS:
        raise ConfigError(f"CORRAL_LOG_FORMAT: {value!r} is not one of {', '.join(LOG_FORMATS)}")
    return value


def otel_enabled() -> bool:
    """OpenTelemetry tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) or
    OTEL_TRACES_EXPORTER (other than `none`) is set; the SDK reads its other OTEL_* variables itself."""
    exporter = raw("OTEL_TRACES_EXPORTER").lower()
    if exporter == "none" or _bool("OTEL_SDK_DISABLED"):
        return False
    return bool(exporter or raw("OTEL_EXPORTER_OTLP_ENDPOINT") or raw("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def otel_exporters() -> list[str]:
    """OTEL_TRACES_EXPORTER as a list (default `otlp`): otlp, console."""
    names = [n.strip().lower() for n in raw("OTEL_TRACES_EXPORTER").split(",") if n.strip()] or ["otlp"]
    for n in names:
        if n not in ("otlp", "console", "none"):
            raise ConfigError(f"OTEL_TRACES_EXPORTER: {n!r} is not one of otlp, console, none")
    return [n for n in names if n != "none"]


def check_all() -> None:
    """Reads every variable once, so `corral serve` stops at start-up on a bad value (ConfigError)."""
    models_root()
    ollama_host()
    EngineConfig.from_env()
    Capacity.from_env()
    RegistryTuning.from_env()
    metrics_address()
    api_keys()
    drain_seconds()
    GrpcTransport.from_env()
    max_body_bytes()
    max_json_depth()
    RequestLimits.from_env()
    HttpLimits.from_env()
    pull_on_demand()
    pull_insecure()
    log_format()
    otel_exporters()
