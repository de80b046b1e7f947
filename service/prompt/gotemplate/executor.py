"""Executes a parsed template against Python data, following Go's text/template/exec.go.

Variables live on one stack, as in Go: {{if}}/{{with}}/{{range}} pop what they pushed, so
`{{ $system = .Content }}` inside a range updates the outer $system, as Ollama's gemma and
llama2 templates need. Field lookup on dicts tries the exact key, then the key with its first
letter lower-cased, then snake_case ({"role": ...} answers .Role, {"tool_calls": ...} answers
.ToolCalls). A missing key or a field of nil is nil (Go's missingkey=zero), and an action that
prints nil prints nothing. Maps are ranged in sorted key order, as Go does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from corral.store.gocompat import go_quote

from .funcs import BUILTINS, FuncError
from .nodes import (
    ActionNode,
    BoolNode,
    BranchNode,
    BreakNode,
    ChainNode,
    CommandNode,
    CommentNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    ListNode,
    NilNode,
    NumberNode,
    PipeNode,
    StringNode,
    TemplateError,
    TemplateNode,
    TextNode,
    VariableNode,
    line_col,
)
from .values import go_str, sort_key, truth, type_name

MAX_DEPTH = 100  # nested {{template}} calls (Go allows 100000; Python's stack allows far fewer)
STRING_ARGS = ("currentDate", "yesterdayDate")  # functions taking ...string
_MISSING = object()  # "no piped value" (Go's missingVal)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _lookup(receiver, name: str):
    """Go's field access on Python data; None when absent."""
    if receiver is None:
        return None
    if isinstance(receiver, Mapping):
        for key in (name, name[:1].lower() + name[1:], _CAMEL.sub("_", name).lower()):
            if key in receiver:
                return receiver[key]
        return None
    if isinstance(receiver, (str, int, float, bool, list, tuple, bytes)):
        return None
    for attr in (name, _CAMEL.sub("_", name).lower()):
        if not attr.startswith("_") and hasattr(receiver, attr):
            return getattr(receiver, attr)
    return None


class State:
    def __init__(self, text: str, trees: dict[str, ListNode], name: str, data):
        self.text = text
        self.trees = trees
        self.name = name
        self.out: list[str] = []
        self.vars: list[list] = [["$", data]]
        self.node: Any = None  # the node being evaluated, for error positions
        self.depth = 0

    # -- errors and variables -------------------------------------------------
    def errorf(self, msg: str):
        if self.node is None:
            raise TemplateError(f"template: {self.name}: {msg}")
        line, col = line_col(self.text, self.node.pos)
        raise TemplateError(f'template: {self.name}:{line}:{col}: executing "{self.name}" at <{self.node}>: {msg}')

    def set_var(self, name: str, value) -> None:
        for v in reversed(self.vars):
            if v[0] == name:
                v[1] = value
                return
        self.errorf(f"undefined variable: {name}")

    def var_value(self, name: str):
        for v in reversed(self.vars):
            if v[0] == name:
                return v[1]
        self.errorf(f"undefined variable: {name}")

    # -- walking ----------------------------------------------------------------
    def walk(self, dot, node) -> None:
        self.node = node
        if isinstance(node, TextNode):
            self.out.append(node.text)
        elif isinstance(node, ListNode):
            for n in node.nodes:
                self.walk(dot, n)
        elif isinstance(node, ActionNode):
            val = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.out.append(go_str(val, nil=""))
        elif isinstance(node, BranchNode):
            if node.kind == "range":
                self.walk_range(dot, node)
            else:
                self.walk_if_or_with(dot, node)
        elif isinstance(node, TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, BreakNode):
            raise _Break
        elif isinstance(node, ContinueNode):
            raise _Continue
        elif not isinstance(node, CommentNode):
            self.errorf(f"unknown node: {node}")

    def walk_if_or_with(self, dot, node: BranchNode) -> None:
        mark = len(self.vars)
        try:
            val = self.eval_pipeline(dot, node.pipe)
            if truth(val):
                self.walk(val if node.kind == "with" else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            del self.vars[mark:]

    def walk_range(self, dot, node: BranchNode) -> None:
        outer = len(self.vars)
        try:
            val = self.eval_pipeline(dot, node.pipe)
            mark = len(self.vars)
            if isinstance(val, Mapping):
                items = [(k, val[k]) for k in sorted(val, key=sort_key)]
            elif isinstance(val, (list, tuple)):
                items = list(enumerate(val))
            elif isinstance(val, int) and not isinstance(val, bool):
                items = [(i, i) for i in range(val)]  # Go 1.22+: range over an integer
            elif val is None:
                items = []
            else:
                self.errorf(f"range can't iterate over {go_str(val)}")
            decl = node.pipe.decl
            for key, elem in items:
                if decl:
                    if node.pipe.is_assign:
                        self.set_var(decl[0].ident[0], key if len(decl) > 1 else elem)
                        if len(decl) > 1:
                            self.set_var(decl[1].ident[0], elem)
                    else:
                        self.vars[-1][1] = elem
                        if len(decl) > 1:
                            self.vars[-2][1] = key
                try:
                    self.walk(elem, node.list)
                except _Continue:
                    pass
                except _Break:
                    return
                finally:
                    del self.vars[mark:]
            if not items and node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            del self.vars[outer:]

    def walk_template(self, dot, node: TemplateNode) -> None:
        tree = self.trees.get(node.name)
        if tree is None:
            self.errorf(f"template {go_quote(node.name)} not defined")
        if self.depth >= MAX_DEPTH:
            self.errorf(f"exceeded maximum template depth ({MAX_DEPTH})")
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        saved = self.vars
        self.vars = [["$", new_dot]]
        self.depth += 1
        try:
            self.walk(new_dot, tree)
        finally:
            self.depth -= 1
            self.vars = saved

    # -- evaluation -------------------------------------------------------------
    def eval_pipeline(self, dot, pipe: PipeNode):
        value = _MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
        for v in pipe.decl:
            if pipe.is_assign:
                self.set_var(v.ident[0], value)
            else:
                self.vars.append([v.ident[0], value])
        return value

    def not_a_function(self, args: list, final) -> None:
        if len(args) > 1 or final is not _MISSING:
            self.errorf(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot, cmd: CommandNode, final):
        first = cmd.args[0]
        self.node = first
        if isinstance(first, FieldNode):
            return self.eval_fields(dot, dot, first.ident, cmd.args, final)
        if isinstance(first, ChainNode):
            if isinstance(first.node, NilNode):
                self.errorf(f"indirection through explicit nil in {first}")
            base = self.eval_arg(dot, first.node)
            return self.eval_fields(dot, base, first.fields, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, VariableNode):
            value = self.var_value(first.ident[0])
            if len(first.ident) == 1:
                self.not_a_function(cmd.args, final)
                return value
            return self.eval_fields(dot, value, first.ident[1:], cmd.args, final)
        self.not_a_function(cmd.args, final)
        if isinstance(first, PipeNode):
            return self.eval_pipeline(dot, first)
        if isinstance(first, NilNode):
            self.errorf("nil is not a command")
        return self.eval_arg(dot, first)

    def eval_fields(self, dot, receiver, idents: list[str], args: list, final):
        for name in idents:
            receiver = _lookup(receiver, name)
        if len(args) > 1 or final is not _MISSING:
            self.errorf(f"{idents[-1]} is not a method but has arguments")
        return receiver

    def eval_function(self, dot, ident: IdentifierNode, cmd, args: list, final):
        name = ident.name
        self.node = ident
        fn, lo, hi = BUILTINS[name]
        argn = args[1:]
        count = len(argn) + (final is not _MISSING)
        if count < lo or (hi is not None and count > hi):
            want = f"at least {lo}" if hi is None else str(lo)
            self.errorf(f"wrong number of args for {name}: want {want} got {count}")
        self.node = cmd
        if name in ("and", "or"):
            thunks: list[Callable[[], Any]] = [functools.partial(self.eval_arg, dot, a) for a in argn]
            if final is not _MISSING:
                thunks.append(lambda: final)
            val = None
            for th in thunks:
                val = th()
                if truth(val) == (name == "or"):
                    return val
            return val
        strings = len(argn) + 1 if name in STRING_ARGS else 1 if name == "printf" else 0
        values = []
        for i, node in enumerate(argn):  # Go converts each argument to its parameter type in turn
            values.append(self.eval_arg(dot, node))
            if i < strings:
                self.check_string(node, values[-1])
        if final is not _MISSING:
            values.append(final)
        self.node = cmd
        try:
            result = fn(*values)
        except FuncError as e:
            self.errorf(f"error calling {name}: {e}")
        if argn:
            self.node = argn[-1]  # Go leaves its position at the last argument evaluated
        return result

    def check_string(self, node, value) -> None:
        if isinstance(value, str):
            return
        self.node = node
        if isinstance(node, NilNode):
            self.errorf("cannot assign nil to string")
        if isinstance(node, (BoolNode, NumberNode)):
            self.errorf(f"expected string; found {node}")
        got = "interface {}" if value is None else type_name(value)
        self.errorf(f"wrong type for value; expected string; got {got}")

    def eval_arg(self, dot, node):
        self.node = node
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, NilNode):
            return None
        if isinstance(node, FieldNode):
            return self.eval_fields(dot, dot, node.ident, [node], _MISSING)
        if isinstance(node, VariableNode):
            value = self.var_value(node.ident[0])
            return self.eval_fields(dot, value, node.ident[1:], [node], _MISSING) if len(node.ident) > 1 else value
        if isinstance(node, PipeNode):
            return self.eval_pipeline(dot, node)
        if isinstance(node, IdentifierNode):
            return self.eval_function(dot, node, node, [node], _MISSING)
        if isinstance(node, ChainNode):
            return self.eval_command(dot, CommandNode([node], pos=node.pos), _MISSING)
        if isinstance(node, (BoolNode, NumberNode)):
            return node.value
        if isinstance(node, StringNode):
            return node.text
        self.errorf(f"can't handle {node} for arg")


def execute(text: str, trees: dict[str, ListNode], data, name: str = "", root: ListNode | None = None) -> str:
    """Run template `name` of `trees` (or the given root list) with `data` as dot and $."""
    state = State(text, trees, name, data)
    try:
        state.walk(data, root if root is not None else trees[name])
    except (_Break, _Continue):  # pragma: no cover - the parser rejects these outside range
        pass
    except RecursionError:
        raise TemplateError(f"template: {name}: exceeded maximum template depth") from None
    return "".join(state.out)
