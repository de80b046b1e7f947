"""Model names: Ollama's `[scheme://][host/][namespace/]model[:tag]` grammar (spec §2).

Why a module of its own: every endpoint starts by parsing a name, and clients depend on the exact rules
(which names are invalid, what the defaults are, how a name is displayed). This follows Ollama's
`types/model/name.go`.

Parsing, right to left:
  1. if the last ':' comes after the last '/', the text after it is the tag (so `localhost:5000/ns/m`
     keeps ':5000' in the host and has no tag);
  2. the model is cut at the last '/';
  3. the namespace at the next '/';
  4. the rest is the host, optionally prefixed by `scheme://`.
An empty piece beside a separator (`m:`, `/m`, `ns//m`) makes the name invalid.

Defaults: host registry.ollama.ai, namespace library, tag latest, scheme https.

Validity (ASCII only; the first character of every part is [A-Za-z0-9_]):

    part       length   later characters
    host       1-350    [A-Za-z0-9_.:-]
    namespace  1-80     [A-Za-z0-9_-]      (no dot)
    model      1-80     [A-Za-z0-9_.-]
    tag        1-80     [A-Za-z0-9_.-]

Four or more path parts leave a '/' in the host, and '@digest' leaves an '@' in the tag or model: both
invalid. Display form: `model:tag` (default host and namespace), `ns/model:tag` (default host only),
`host/ns/model:tag` otherwise; the default checks ignore case. Names keep the casing they were given;
matching against stored names ignoring case is done by store.manifests.ManifestStore.resolve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.store.errors import InvalidArgument

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"

# Stands in for a piece that was promised by a separator but is empty; it can never be valid.
_MISSING = "!MISSING!"

_PART_RULES = {  # kind -> (max length, pattern); the first character is always [A-Za-z0-9_]
    "host": (350, re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")),
    "namespace": (80, re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")),
    "model": (80, re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")),
    "tag": (80, re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")),
}
PART_KINDS = ("host", "namespace", "model", "tag")


def is_valid_part(kind: str, text: str) -> bool:
    """True if `text` is a valid `kind` part ('host', 'namespace', 'model' or 'tag')."""
    max_len, pattern = _PART_RULES[kind]
    return 1 <= len(text) <= max_len and text.isascii() and pattern.fullmatch(text) is not None


@dataclass(frozen=True)
class Name:
    """A parsed model name with defaults applied. Construct with parse_name() unless all parts are known."""

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = DEFAULT_SCHEME

    def is_valid(self) -> bool:
        return all(is_valid_part(kind, part) for kind, part in zip(PART_KINDS, self.parts, strict=False))

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def display(self) -> str:
        """The shortest form, as /api/tags and /api/ps show it."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        """The registry repository path, `ns/model`."""
        return f"{self.namespace}/{self.model}"

    def with_parts(self, host: str, namespace: str, model: str, tag: str) -> Name:
        """The same name (and scheme) with other parts, e.g. after case canonicalisation."""
        return Name(host, namespace, model, tag, self.scheme)

    def __str__(self) -> str:
        return self.full


def _cut_last(text: str, sep: str) -> tuple[str, str, bool]:
    """Splits at the last `sep`; empty pieces become _MISSING so that the name is invalid."""
    i = text.rfind(sep)
    if i < 0:
        return text, "", False
    return text[:i] or _MISSING, text[i + len(sep):] or _MISSING, True


def parse_name(text: str) -> Name:
    """Parses `text` and fills in the defaults. Never raises: check .is_valid()."""
    host = namespace = tag = ""
    scheme = DEFAULT_SCHEME
    rest = text
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag, _ = _cut_last(rest, ":")
    rest, model, cut = _cut_last(rest, "/")
    if not cut:
        model = rest
    else:
        rest, namespace, cut = _cut_last(rest, "/")
        if not cut:
            namespace = rest
        else:
            given_scheme, sep, after = rest.partition("://")
            if sep:
                scheme, host = given_scheme, after
            else:
                host = rest
    return Name(
        host=host or DEFAULT_HOST,
        namespace=namespace or DEFAULT_NAMESPACE,
        model=model,
        tag=tag or DEFAULT_TAG,
        scheme=scheme or DEFAULT_SCHEME,
    )


def require_name(text: str, error: str = "invalid model name") -> Name:
    """parse_name() that raises InvalidArgument(error) for an invalid name."""
    name = parse_name(text)
    if not name.is_valid():
        raise InvalidArgument(error)
    return name


def name_from_parts(parts: tuple[str, ...] | list[str]) -> Name | None:
    """The name stored at manifests/<host>/<ns>/<model>/<tag>, or None if the parts are not a valid name."""
    if len(parts) != 4:
        return None
    name = Name(*parts)
    return name if name.is_valid() else None
