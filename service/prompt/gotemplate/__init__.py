"""A Python implementation of the subset of Go's text/template that Ollama model templates use.

Ollama renders prompts with Go templates ({{ range .Messages }}, {{- trim markers -}}, eq, and,
slice, printf, json, ...), and a model's prompt must come out byte for byte as Ollama's does.
This package is a small port of Go's own lexer (lexer.py), recursive-descent parser (parser.py)
and evaluator (executor.py), with Go's value formatting (values.py, printf.py) and the builtin and
Ollama-specific functions (funcs.py). service/templates.py adds Ollama's prompt-building rules.

    trees = parse("Hello {{ .Name }}")          # {template name: ListNode}; "" is the main one
    execute(text, trees, {"Name": "x"})          # -> "Hello x"
"""

from .executor import execute
from .funcs import BUILTINS
from .nodes import TemplateError
from .parser import parse as _parse
from .values import JSONList, JSONMap, JSONStruct, Struct, go_json, go_str, truth

FUNCS = frozenset(BUILTINS)


def parse(text: str, name: str = ""):
    """Parse `text` with the builtin and Ollama functions; raises TemplateError."""
    return _parse(text, FUNCS, name)


__all__ = ["FUNCS", "JSONList", "JSONMap", "JSONStruct", "Struct", "TemplateError", "execute", "go_json", "go_str",
           "parse", "truth"]
