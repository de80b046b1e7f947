"""Parse-tree nodes for the Go text/template subset, mirroring Go's text/template/parse.

The node kinds and their String() forms follow Go's so that error messages ("unexpected {{end}}",
"executing ... at <eq .Role 1>") read the same, and so that Ollama's tree rewrites (appending
{{ .Response }}, cutting everything after it for legacy prompts) can be done node for node.
Every node carries `pos`, its byte-ish offset in the source, for error locations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.store.gocompat import go_quote


class TemplateError(Exception):
    """A parse or execution error; str() is the Go-style message ("template: :1: unclosed action")."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Node:
    pos: int = 0


@dataclass(eq=False)
class ListNode(Node):
    nodes: list = field(default_factory=list)
    pos: int = 0

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


@dataclass(eq=False)
class TextNode(Node):
    text: str
    pos: int = 0

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False)
class CommentNode(Node):
    text: str
    pos: int = 0

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


@dataclass(eq=False)
class FieldNode(Node):
    ident: list[str]
    pos: int = 0

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


@dataclass(eq=False)
class VariableNode(Node):
    ident: list[str]
    pos: int = 0

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass(eq=False)
class ChainNode(Node):
    node: Node
    fields: list[str]
    pos: int = 0

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return inner + "".join("." + f for f in self.fields)


@dataclass(eq=False)
class IdentifierNode(Node):
    name: str
    pos: int = 0

    def __str__(self) -> str:
        return self.name


@dataclass(eq=False)
class DotNode(Node):
    pos: int = 0

    def __str__(self) -> str:
        return "."


@dataclass(eq=False)
class NilNode(Node):
    pos: int = 0

    def __str__(self) -> str:
        return "nil"


@dataclass(eq=False)
class BoolNode(Node):
    value: bool
    pos: int = 0

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(eq=False)
class NumberNode(Node):
    value: int | float
    text: str
    pos: int = 0

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False)
class StringNode(Node):
    quoted: str
    text: str
    pos: int = 0

    def __str__(self) -> str:
        return self.quoted


@dataclass(eq=False)
class CommandNode(Node):
    args: list = field(default_factory=list)
    pos: int = 0

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass(eq=False)
class PipeNode(Node):
    decl: list = field(default_factory=list)  # VariableNodes
    is_assign: bool = False
    cmds: list = field(default_factory=list)  # CommandNodes
    pos: int = 0

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


@dataclass(eq=False)
class ActionNode(Node):
    pipe: PipeNode
    pos: int = 0

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


@dataclass(eq=False)
class BranchNode(Node):
    """if / range / with: `kind` is the keyword."""

    kind: str
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None = None
    pos: int = 0

    def __str__(self) -> str:
        s = "{{" + self.kind + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


@dataclass(eq=False)
class TemplateNode(Node):
    name: str
    pipe: PipeNode | None = None
    pos: int = 0

    def __str__(self) -> str:
        if self.pipe is None:
            return "{{template " + go_quote(self.name) + "}}"
        return "{{template " + go_quote(self.name) + " " + str(self.pipe) + "}}"


@dataclass(eq=False)
class BreakNode(Node):
    pos: int = 0

    def __str__(self) -> str:
        return "{{break}}"


@dataclass(eq=False)
class ContinueNode(Node):
    pos: int = 0

    def __str__(self) -> str:
        return "{{continue}}"


@dataclass(eq=False)
class EndNode(Node):
    """Parser-internal marker for {{end}}."""

    pos: int = 0

    def __str__(self) -> str:
        return "{{end}}"


@dataclass(eq=False)
class ElseNode(Node):
    """Parser-internal marker for {{else}}; `chained` is "if"/"with" for {{else if}}/{{else with}}."""

    chained: str = ""
    pos: int = 0

    def __str__(self) -> str:
        return "{{else}}"


def line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and 0-based column (Go's ErrorContext) of offset `pos`."""
    before = text[:pos]
    nl = before.rfind("\n")
    return before.count("\n") + 1, (pos if nl < 0 else pos - nl - 1)
