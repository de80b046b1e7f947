"""A static check that the service reads every request field and sets every response field.

Why static: a field nothing reads is a silent lie in the API (a client sets it and nothing happens), and
no behaviour test notices its absence. The AST of every module under service/ is scanned for evidence:

reads  `x.field` (any attribute load), `getattr(x, "field")`, `hasattr(x, "field")`,
       `x.HasField("field")`, and the same through helpers: a function that passes one of its parameters
       to getattr/hasattr/HasField (e.g. `_optional(request, field)`) reads the string literals it is
       called with (and its parameter's default), and a loop or comprehension over literal strings
       (`for key in ("from", "path"): getattr(request, key)`) reads each of them.
sets   a keyword argument to a message constructor (`pb.ModelDetails(format=...)`, per message, also
       `**{"field": ...}` and `**d` with d a dict literal in the same function), an attribute store
       (`x.field = ...`, `x.field += ...`), a mutating call on the field (`x.field.CopyFrom(...)`,
       `.extend`, `.append`, `.add`, `.update`, `.MergeFrom`, ...), an item store `x.field[k] = v`,
       `setattr(x, "field", ...)` (also through helpers and literal loops as above), and the keys of a
       dict literal given to `ParseDict`.

`self.x` and `cls.x` are an object's own state and count for nothing.

Limits (deliberate, so the check stays simple and robust while the code moves): reads and all sets
except constructor keywords are matched by field name, not by message type, so a field is "read" when
any message or object under service/ has an attribute of that name read. Wholesale conversions
(`MessageToDict(request)`) are not understood; spell fields out instead.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

READ, SET = "read", "set"

# builtin name -> (position of the field-name argument, kind)
BUILTIN_ACCESSORS = {"getattr": (1, READ), "hasattr": (1, READ), "setattr": (1, SET)}
# method name -> (position of the field-name argument, kind)
METHOD_ACCESSORS = {"HasField": (0, READ)}
# methods that, called on a field (`x.field.<method>(...)`), set it
MUTATORS = frozenset(
    {
        "CopyFrom", "MergeFrom", "MergeFromString", "ParseFromString", "SetInParent",
        "extend", "append", "add", "insert", "update",
        "FromDatetime", "FromTimedelta", "FromSeconds", "FromMilliseconds", "FromMicroseconds",
        "FromNanoseconds", "FromJsonString", "GetCurrentTime",
    }
)


@dataclass
class Evidence:
    read: set[str] = field(default_factory=set)  # field names read (any message)
    set_any: set[str] = field(default_factory=set)  # field names set (any message)
    set_by_message: dict[str, set[str]] = field(default_factory=dict)  # message name -> constructor keywords

    def is_read(self, message: str, name: str) -> bool:
        return name in self.read

    def is_set(self, message: str, name: str) -> bool:
        return name in self.set_any or name in self.set_by_message.get(message, set())


@dataclass(frozen=True)
class _Accessor:
    position: int | None  # index among the call's positional arguments (self/cls not counted)
    keyword: str
    kind: str


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _argument(call: ast.Call, position: int | None, keyword: str | None) -> ast.expr | None:
    for kw in call.keywords:
        if keyword is not None and kw.arg == keyword:
            return kw.value
    if position is None or position >= len(call.args):
        return None
    if not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
        return call.args[position]
    return None


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[ast.arg, int | None, ast.expr | None]]:
    """(arg, call position, default) for each parameter; self/cls is not a call position."""
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    skip = 1 if positional and positional[0].arg in ("self", "cls") else 0
    out = [(arg, i - skip if i >= skip else None, d) for i, (arg, d) in enumerate(zip(positional, defaults, strict=True))]
    out += [(arg, None, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    return out


def _str_consts(node: ast.expr | None) -> set[str] | None:
    """The strings of a literal str or tuple/list/set of strs, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    literal = isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts
    if literal and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return {e.value for e in node.elts}
    return None


def _dict_keys(node: ast.expr | None) -> set[str] | None:
    """String keys of a dict literal or of dict(k=...), else None."""
    if isinstance(node, ast.Dict):
        return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {kw.arg for kw in node.keywords if kw.arg}
    return None


class _Scope:
    """What a function (or a module's top level) binds to literal strings: loop variables over literal
    strings, names assigned literal string collections, and names assigned dict literals."""

    def __init__(self, node: ast.AST, parent: _Scope | None):
        self.strings: dict[str, set[str]] = {k: set(v) for k, v in (parent.strings if parent else {}).items()}
        self.dicts: dict[str, set[str]] = {k: set(v) for k, v in (parent.dicts if parent else {}).items()}
        for sub in ast.walk(node):
            if isinstance(sub, (ast.For, ast.AsyncFor, ast.comprehension)) and isinstance(sub.target, ast.Name):
                values = self.values(sub.iter)
                if values:
                    self.strings.setdefault(sub.target.id, set()).update(values)
            elif isinstance(sub, (ast.Assign, ast.AnnAssign)):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        consts, keys = _str_consts(sub.value), _dict_keys(sub.value)
                        if consts is not None:
                            self.strings.setdefault(t.id, set()).update(consts)
                        if keys is not None:
                            self.dicts.setdefault(t.id, set()).update(keys)
                    elif (
                        isinstance(t, ast.Subscript)
                        and isinstance(t.value, ast.Name)
                        and isinstance(t.slice, ast.Constant)
                        and isinstance(t.slice.value, str)
                    ):
                        self.dicts.setdefault(t.value.id, set()).add(t.slice.value)

    def values(self, node: ast.expr | None) -> set[str]:
        consts = _str_consts(node)
        if consts is not None:
            return consts
        if isinstance(node, ast.Name):
            return self.strings.get(node.id, set())
        return set()

    def keys(self, node: ast.expr | None) -> set[str]:
        keys = _dict_keys(node)
        if keys is not None:
            return keys
        if isinstance(node, ast.Name):
            return self.dicts.get(node.id, set())
        return set()


class _Accessors:
    """Functions that pass a parameter to getattr/hasattr/setattr/HasField, directly or through another
    such function (found to a fixed point), and what a call of any accessor names.

    A call by bare name resolves to the module's own function of that name when it has one (two modules'
    private `_optional` helpers are different functions), else to any accessor of that name (an import);
    a call through an attribute (`self._get(...)`, `status.get(...)`) to any accessor of that name.
    """

    def __init__(self, trees: list[ast.Module]):
        self.by_name: dict[str, dict[int, list[_Accessor]]] = {}  # name -> module index -> accessors
        self.local: list[set[str]] = [
            {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))} for tree in trees
        ]
        functions = [
            (i, n)
            for i, t in enumerate(trees)
            for n in ast.walk(t)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        changed = True
        while changed:
            changed = False
            for module, fn in functions:
                params = {arg.arg: pos for arg, pos, _ in _params(fn)}
                for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                    for arg, kind in self.uses(call, module):
                        if isinstance(arg, ast.Name) and arg.id in params:
                            acc = _Accessor(params[arg.id], arg.id, kind)
                            known = self.by_name.setdefault(fn.name, {}).setdefault(module, [])
                            if acc not in known:
                                known.append(acc)
                                changed = True

    def of(self, name: str | None, module: int, by_bare_name: bool) -> list[_Accessor]:
        per_module = self.by_name.get(name, {})
        if by_bare_name and name in self.local[module]:
            return per_module.get(module, [])
        return [acc for accs in per_module.values() for acc in accs]

    def uses(self, call: ast.Call, module: int) -> list[tuple[ast.expr, str]]:
        """(field-name argument, kind) for each accessor this call is."""
        name, uses = _call_name(call), []
        if isinstance(call.func, ast.Name) and name in BUILTIN_ACCESSORS:
            pos, kind = BUILTIN_ACCESSORS[name]
            uses.append((_argument(call, pos, None), kind))
        if isinstance(call.func, ast.Attribute) and name in METHOD_ACCESSORS:
            pos, kind = METHOD_ACCESSORS[name]
            uses.append((_argument(call, pos, None), kind))
        for acc in self.of(name, module, isinstance(call.func, ast.Name)):
            uses.append((_argument(call, acc.position, acc.keyword), acc.kind))
        return [(arg, kind) for arg, kind in uses if arg is not None]


class _Collector(ast.NodeVisitor):
    def __init__(self, evidence: Evidence, accessors: _Accessors, messages: set[str], module: int):
        self.ev, self.accessors, self.messages, self.module = evidence, accessors, messages, module
        self.scopes: list[_Scope] = []

    def _record(self, kind: str, names: set[str]) -> None:
        (self.ev.read if kind == READ else self.ev.set_any).update(names)

    def visit_Module(self, node: ast.Module) -> None:
        self.scopes.append(_Scope(node, None))
        self.generic_visit(node)
        self.scopes.pop()

    def visit_FunctionDef(self, node) -> None:
        self.scopes.append(_Scope(node, self.scopes[-1] if self.scopes else None))
        # a helper's parameter default is read (or set) whenever the helper is called without it
        for acc in self.accessors.by_name.get(node.name, {}).get(self.module, ()):
            for arg, _, default in _params(node):
                if arg.arg == acc.keyword:
                    self._record(acc.kind, _str_consts(default) or set())
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            pass  # an object's own state, never a message's field
        elif isinstance(node.ctx, ast.Load):
            self.ev.read.add(node.attr)
        else:  # x.field = ..., del x.field
            self.ev.set_any.add(node.attr)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Attribute):
            self.ev.set_any.add(node.value.attr)  # x.field[k] = v (map fields)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        scope, name = self.scopes[-1], _call_name(node)
        for arg, kind in self.accessors.uses(node, self.module):
            self._record(kind, scope.values(arg))
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in MUTATORS and isinstance(func.value, ast.Attribute):
            self.ev.set_any.add(func.value.attr)  # x.field.CopyFrom(...), x.field.extend(...)
        if name in self.messages:
            fields = self.ev.set_by_message.setdefault(name, set())
            for kw in node.keywords:
                fields.update({kw.arg} if kw.arg else scope.keys(kw.value))
        if name == "ParseDict" and node.args:
            self.ev.set_any.update(scope.keys(node.args[0]))
        self.generic_visit(node)


def scan_sources(sources: dict[str, str], messages: set[str]) -> Evidence:
    """Evidence from Python sources (path -> text); `messages` are the simple names of the API's messages."""
    trees = [ast.parse(text, filename=path) for path, text in sources.items()]
    evidence, accessors = Evidence(), _Accessors(trees)
    for module, tree in enumerate(trees):
        _Collector(evidence, accessors, messages, module).visit(tree)
    return evidence


def scan_tree(root: Path, messages: set[str], exclude: tuple[Path, ...] = ()) -> Evidence:
    """Evidence from every .py file under root (recursively), minus `exclude`."""
    skip = {p.resolve() for p in exclude}
    sources = {
        str(p): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*.py"))
        if p.resolve() not in skip and "__pycache__" not in p.parts
    }
    return scan_sources(sources, messages)


# -- the API's messages, by role ---------------------------------------------------------------------


def reachable(roots, package: str) -> list:
    """The message descriptors reachable from roots through message-typed fields, within `package`
    (well-known types such as Struct and Timestamp are not ours to check; map entries are not messages)."""
    seen: dict[str, object] = {}
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m.full_name in seen or not m.full_name.startswith(package + ".") or m.GetOptions().map_entry:
            continue
        seen[m.full_name] = m
        todo.extend(f.message_type for f in m.fields if f.message_type is not None)
    return list(seen.values())


@dataclass
class Report:
    unread: list[str]  # request fields nothing reads and not listed
    unset: list[str]  # response fields nothing sets and not listed
    stale: list[str]  # listed fields that are read/set after all
    unknown: list[str]  # listed names that are no field of the API

    @property
    def ok(self) -> bool:
        return not (self.unread or self.unset or self.stale or self.unknown)

    def message(self) -> str:
        lines = []
        if self.unread:
            lines.append("Request fields that nothing under service/ reads:")
            lines += [f"  {f}" for f in self.unread]
        if self.unset:
            lines.append("Response fields that nothing under service/ sets:")
            lines += [f"  {f}" for f in self.unset]
        if self.unread or self.unset:
            lines.append(
                "Use each field in the service, or list it with the reason in service/api/unused_fields.py"
                ' (and add "Unused: <reason>" to its comment in protos/ollama/v1/ollama.proto).'
            )
        if self.stale:
            lines.append("Listed in service/api/unused_fields.py but used now (remove the entry and the"
                         ' "Unused:" line of its proto comment):')
            lines += [f"  {f}" for f in self.stale]
        if self.unknown:
            lines.append("Listed in service/api/unused_fields.py but no such field in the API:")
            lines += [f"  {f}" for f in self.unknown]
        return "\n".join(lines)


def check(service_descriptor, evidence: Evidence, ignored: dict[str, str]) -> Report:
    """Every field of every request message (and messages nested in them) read, every field of every
    response message (and nested) set, or listed in `ignored` (full field name -> reason)."""
    package = service_descriptor.file.package
    requests = reachable([m.input_type for m in service_descriptor.methods], package)
    responses = reachable([m.output_type for m in service_descriptor.methods], package)
    failing: dict[str, set[str]] = {}  # full field name -> the roles it fails
    for messages, kind in ((requests, READ), (responses, SET)):
        for m in messages:
            for f in m.fields:
                ok = evidence.is_read(m.name, f.name) if kind == READ else evidence.is_set(m.name, f.name)
                if not ok:
                    failing.setdefault(f.full_name, set()).add(kind)
    every_field = {f.full_name for m in requests + responses for f in m.fields}
    return Report(
        unread=sorted(f for f, kinds in failing.items() if READ in kinds and f not in ignored),
        unset=sorted(f for f, kinds in failing.items() if SET in kinds and f not in ignored),
        stale=sorted(f for f in ignored if f in every_field and f not in failing),
        unknown=sorted(f for f in ignored if f not in every_field),
    )
