"""Recursive-descent parser for Go's text/template, a port of text/template/parse/parse.go.

It keeps Go's grammar and error texts ("template: :1: unexpected EOF", "function \"foo\" not
defined", "undefined variable \"$x\"") because Ollama returns them verbatim from /api/create as
"template error: <msg>". The lexer's tokens are all in a list, so Go's three-token look-ahead is a
cursor that can step back.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NoReturn

from . import lexer as L
from .literals import parse_number, unquote
from .nodes import (
    ActionNode,
    BoolNode,
    BranchNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    ElseNode,
    EndNode,
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
)

_OPERAND_START = {L.BOOL, L.CHAR_CONST, L.DOT, L.FIELD, L.IDENT, L.NUMBER, L.NIL, L.RAW_STRING, L.STRING,
                  L.VARIABLE, L.LPAREN}
class Parser:
    def __init__(self, text: str, funcs: Collection[str], name: str = ""):
        self.text = text
        self.name = name
        self.funcs = funcs
        self.toks = L.lex(text)
        self.i = 0
        self.seen = 0  # furthest token looked at: Go reports the line of the last token lexed
        self.vars = ["$"]
        self.range_depth = 0
        self.action_line = 0
        self.trees: dict[str, ListNode] = {}

    # -- token cursor -----------------------------------------------------------
    def next(self) -> L.Token:
        t = self.toks[min(self.i, len(self.toks) - 1)]
        self.seen = max(self.seen, self.i)
        self.i += 1
        return t

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> L.Token:
        self.seen = max(self.seen, self.i)
        return self.toks[min(self.i, len(self.toks) - 1)]

    def next_non_space(self) -> L.Token:
        t = self.next()
        while t.typ == L.SPACE:
            t = self.next()
        return t

    def peek_non_space(self) -> L.Token:
        t = self.next_non_space()
        self.backup()
        return t

    # -- errors ------------------------------------------------------------------
    def errorf(self, msg: str, tok: L.Token | None = None) -> NoReturn:
        line = self.toks[min(self.seen, len(self.toks) - 1)].line
        raise TemplateError(f"template: {self.name}:{line}: {msg}")

    def unexpected(self, tok: L.Token, context: str) -> NoReturn:
        if tok.typ == L.ERROR:
            extra = ""
            if self.action_line and self.action_line != tok.line:
                extra = f" in action started at {self.name}:{self.action_line}"
                if tok.val.endswith(" action"):
                    extra = extra[len(" in action"):]
            self.errorf(f"{tok}{extra}", tok)
        self.errorf(f"unexpected {tok} in {context}", tok)

    def expect(self, typ: str, context: str) -> L.Token:
        t = self.next_non_space()
        if t.typ != typ:
            self.unexpected(t, context)
        return t

    # -- grammar -----------------------------------------------------------------
    def parse(self) -> dict[str, ListNode]:
        root = ListNode(pos=self.peek().pos)
        while self.peek().typ != L.EOF:
            if self.peek().typ == L.LEFT_DELIM:
                mark = self.i
                self.next()
                if self.next_non_space().typ == "define":
                    self.parse_definition()
                    continue
                self.i = mark
            n = self.text_or_action()
            if isinstance(n, (EndNode, ElseNode)):
                self.errorf(f"unexpected {n}")
            root.nodes.append(n)
        self.add(self.name, root)
        return self.trees

    def add(self, name: str, root: ListNode) -> None:
        old = self.trees.get(name)
        if old is None or _is_empty(old):
            self.trees[name] = root
        elif not _is_empty(root):
            self.errorf(f"template: multiple definition of template {L._q(name)}")

    def parse_definition(self) -> None:
        t = self.next_non_space()
        if t.typ not in (L.STRING, L.RAW_STRING):
            self.unexpected(t, "define clause")
        name = self.unquote(t)
        self.expect(L.RIGHT_DELIM, "define clause")
        body, end = self.nested_list()
        if not isinstance(end, EndNode):
            self.errorf(f"unexpected {end} in define clause")
        self.add(name, body)

    def nested_list(self):
        """The body of a {{define}} or {{block}}: a fresh tree with only $ defined."""
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        try:
            return self.item_list()
        finally:
            self.vars, self.range_depth = saved

    def item_list(self):
        lst = ListNode(pos=self.peek_non_space().pos)
        while self.peek_non_space().typ != L.EOF:
            n = self.text_or_action()
            if isinstance(n, (EndNode, ElseNode)):
                return lst, n
            lst.nodes.append(n)
        self.errorf("unexpected EOF")

    def text_or_action(self):
        t = self.next_non_space()
        if t.typ == L.TEXT:
            return TextNode(t.val, pos=t.pos)
        if t.typ == L.LEFT_DELIM:
            self.action_line = t.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        self.unexpected(t, "input")

    def action(self):
        t = self.next_non_space()
        k = t.typ
        if k == "block":
            return self.block_control()
        if k in ("break", "continue"):
            nt = self.next_non_space()
            if nt.typ != L.RIGHT_DELIM:
                self.unexpected(nt, "{{%s}}" % k)
            if self.range_depth == 0:
                self.errorf("{{%s}} outside {{range}}" % k)
            return BreakNode(pos=t.pos) if k == "break" else ContinueNode(pos=t.pos)
        if k == "else":
            p = self.peek_non_space()
            if p.typ in ("if", "with"):
                return ElseNode(chained=p.typ, pos=p.pos)
            self.expect(L.RIGHT_DELIM, "else")
            return ElseNode(pos=t.pos)
        if k == "end":
            self.expect(L.RIGHT_DELIM, "end")
            return EndNode(pos=t.pos)
        if k in ("if", "range", "with"):
            return self.control(k)
        if k == "template":
            return self.template_control()
        self.backup()
        return ActionNode(self.pipeline("command", L.RIGHT_DELIM), pos=t.pos)

    def control(self, kind: str) -> BranchNode:
        mark = len(self.vars)
        pipe = self.pipeline(kind, L.RIGHT_DELIM)
        if kind == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if kind == "range":
            self.range_depth -= 1
        else_list = None
        if isinstance(nxt, ElseNode):
            if kind != "range" and nxt.chained == kind:
                # {{else if x}} is {{else}}{{if x}}...{{end}}{{end}} with a single {{end}}.
                self.next_non_space()
                else_list = ListNode([self.control(kind)], pos=nxt.pos)
            else:
                else_list, nxt = self.item_list()
                if not isinstance(nxt, EndNode):
                    self.errorf(f"expected end; found {nxt}")
        del self.vars[mark:]
        return BranchNode(kind, pipe, body, else_list, pos=pipe.pos)

    def template_control(self) -> TemplateNode:
        t = self.next_non_space()
        name = self.template_name(t, "template clause")
        pipe = None
        if self.next_non_space().typ != L.RIGHT_DELIM:
            self.backup()
            pipe = self.pipeline("template clause", L.RIGHT_DELIM)
        return TemplateNode(name, pipe, pos=t.pos)

    def block_control(self) -> TemplateNode:
        t = self.next_non_space()
        name = self.template_name(t, "block clause")
        pipe = self.pipeline("block clause", L.RIGHT_DELIM)
        body, end = self.nested_list()
        if not isinstance(end, EndNode):
            self.errorf(f"unexpected {end} in block clause")
        self.add(name, body)
        return TemplateNode(name, pipe, pos=t.pos)

    def template_name(self, t: L.Token, context: str) -> str:
        if t.typ not in (L.STRING, L.RAW_STRING):
            self.unexpected(t, context)
        return self.unquote(t)

    def unquote(self, t: L.Token) -> str:
        try:
            return unquote(t.val)
        except ValueError as e:
            self.errorf(str(e), t)

    def pipeline(self, context: str, end: str) -> PipeNode:
        pipe = PipeNode(pos=self.peek_non_space().pos)
        while self.peek_non_space().typ == L.VARIABLE:  # declarations?
            mark = self.i
            v = self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.typ in (L.ASSIGN, L.DECLARE):
                pipe.is_assign = nxt.typ == L.ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode([v.val], pos=v.pos))
                self.vars.append(v.val)
                break
            if nxt.typ == L.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode([v.val], pos=v.pos))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (L.VARIABLE, L.RIGHT_DELIM, L.RPAREN):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            self.i = mark  # not a declaration: $x is the first operand
            break
        while True:
            t = self.next_non_space()
            if t.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if t.typ in _OPERAND_START:
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(t, context)

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            self.errorf(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (BoolNode, DotNode, NilNode, NumberNode, StringNode)):
                self.errorf(f"non executable command in pipeline stage {i + 2}")

    def command(self) -> CommandNode:
        cmd = CommandNode(pos=self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            op = self.operand()
            if op is not None:
                cmd.args.append(op)
            t = self.next()
            if t.typ == L.SPACE:
                continue
            if t.typ in (L.RIGHT_DELIM, L.RPAREN):
                self.backup()
            elif t.typ != L.PIPE:
                self.unexpected(t, "operand")
            break
        if not cmd.args:
            self.errorf("empty command")
        return cmd

    def operand(self):
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == L.FIELD:
            pos = self.peek().pos
            fields = []
            while self.peek().typ == L.FIELD:
                fields.append(self.next().val[1:])
            # Like Go, the merged node takes the position of the first chained field.
            if isinstance(node, FieldNode):
                return FieldNode(node.ident + fields, pos=pos)
            if isinstance(node, VariableNode):
                return VariableNode(node.ident + fields, pos=pos)
            if isinstance(node, (BoolNode, StringNode, NumberNode, NilNode, DotNode)):
                self.errorf(f"unexpected . after term {L._q(str(node))}")
            return ChainNode(node, fields, pos=pos)
        return node

    def term(self):
        t = self.next_non_space()
        k = t.typ
        if k == L.IDENT:
            if t.val not in self.funcs:
                self.errorf(f"function {L._q(t.val)} not defined", t)
            return IdentifierNode(t.val, pos=t.pos)
        if k == L.DOT:
            return DotNode(pos=t.pos)
        if k == L.NIL:
            return NilNode(pos=t.pos)
        if k == L.VARIABLE:
            if t.val.split(".")[0] not in self.vars:
                self.errorf(f"undefined variable {L._q(t.val)}", t)
            return VariableNode([t.val], pos=t.pos)
        if k == L.FIELD:
            return FieldNode([t.val[1:]], pos=t.pos)
        if k == L.BOOL:
            return BoolNode(t.val == "true", pos=t.pos)
        if k in (L.CHAR_CONST, L.NUMBER):
            try:
                return NumberNode(parse_number(t.val), t.val, pos=t.pos)
            except ValueError as e:
                self.errorf(str(e), t)
        if k == L.LPAREN:
            return self.pipeline("parenthesized pipeline", L.RPAREN)
        if k in (L.STRING, L.RAW_STRING):
            return StringNode(t.val, self.unquote(t), pos=t.pos)
        self.backup()
        return None


def _is_empty(n) -> bool:
    if n is None:
        return True
    if isinstance(n, ListNode):
        return all(_is_empty(c) for c in n.nodes)
    if isinstance(n, TextNode):
        return n.text.strip() == ""
    return False


def parse(text: str, funcs: Collection[str], name: str = "") -> dict[str, ListNode]:
    """Parse `text`; returns {template name: root list}, the main template under `name`."""
    return Parser(text, funcs, name).parse()
