"""Ollama prompt templates: parse a model's Go template and build the prompt exactly as Ollama does.

Why this module exists: a model's TEMPLATE layer is a Go text/template, and Ollama's
template/template.go adds rules on top of Go's (this is a port of them):

* at parse, a template that references neither .Messages nor .Response gets `{{ .Response }}`
  appended;
* generate with both a prompt and a suffix renders only Prompt and Suffix (fill-in-the-middle);
* a template that uses .Messages renders once with all messages (consecutive same-role messages
  merged with "\\n\\n", tool messages excepted) and System = every system message joined;
* otherwise (legacy) it renders once per user turn with System/Prompt/Response, and the last turn
  uses the template cut right after its {{ .Response }} so a prefilled reply can be continued.

Parse errors raise TemplateError with Go's text, for create's "template error: <msg>". Capabilities
are judged from the template text in service/prompt/capabilities.py. The Go template engine itself is in
service/prompt/gotemplate/.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping

from corral.service.prompt.gotemplate import JSONList, JSONMap, JSONStruct, Struct, TemplateError, execute
from corral.service.prompt.gotemplate import parse as _parse_trees
from corral.service.prompt.gotemplate.nodes import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    ListNode,
    PipeNode,
    TemplateNode,
    VariableNode,
)
from corral.store.errors import InvalidArgument

__all__ = ["DEFAULT_TEMPLATE", "Template", "TemplateError", "collate", "parse", "render_prompt", "validate"]

DEFAULT_TEMPLATE = "{{ .Prompt }}"
THINK_LEVELS = ("high", "medium", "low", "max")


def _response_action(pos: int) -> ActionNode:
    return ActionNode(PipeNode(cmds=[CommandNode([FieldNode(["Response"], pos=pos)], pos=pos)], pos=pos), pos=pos)


class Template:
    """A parsed Ollama template. Immutable; get one with parse(text), which caches by text."""

    def __init__(self, text: str):
        self.text = text
        self._trees = _parse_trees(text)
        names = self.vars()  # also raises "undefined template specified", as Ollama's Parse does
        if "messages" not in names and "response" not in names:
            root = self._trees[""]
            self._trees[""] = ListNode([*root.nodes, _response_action(len(text))], pos=root.pos)
        self._legacy_root: ListNode | None = None

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    # -- inspection ---------------------------------------------------------------
    def vars(self) -> list[str]:
        """Ollama's Template.Vars(): lower-cased field and variable names, sorted and unique."""
        names: set[str] = set()
        for root in self._trees.values():
            _identifiers(root, names)
        return sorted(names)

    def uses(self, field: str) -> bool:
        """Whether the template references .Field (case-insensitive; "Messages", ".Tools", ...)."""
        return field.lstrip(".$").lower() in self.vars()

    # -- rendering --------------------------------------------------------------
    def render(self, data: Mapping) -> str:
        """Execute the template (with the appended {{ .Response }} if any) against `data`."""
        return execute(self.text, self._trees, data)

    def _render_legacy_last(self, data: Mapping) -> str:
        if self._legacy_root is None:
            self._legacy_root = _cut_after_response(self._trees[""])
        return execute(self.text, self._trees, data, root=self._legacy_root)


@functools.lru_cache(maxsize=256)
def parse(text: str) -> Template:
    """Parse a template (cached by text); raises TemplateError("template: :1: ...")."""
    return Template(text)


def validate(text: str) -> None:
    """create's check of a TEMPLATE: InvalidArgument("template error: ...") if it does not parse."""
    try:
        parse(text)
    except TemplateError as exc:
        raise InvalidArgument(f"template error: {exc}") from None


# -- tree walks ported from Ollama --------------------------------------------------
def _identifiers(n, out: set[str]) -> None:
    if isinstance(n, ListNode):
        for c in n.nodes:
            _identifiers(c, out)
    elif isinstance(n, TemplateNode):
        if n.pipe is None:
            raise TemplateError("undefined template specified")
        _identifiers(n.pipe, out)
    elif isinstance(n, ActionNode):
        _identifiers(n.pipe, out)
    elif isinstance(n, BranchNode):
        _identifiers(n.pipe, out)
        _identifiers(n.list, out)
        if n.else_list is not None:
            _identifiers(n.else_list, out)
    elif isinstance(n, PipeNode):
        for c in n.cmds:
            for a in c.args:
                _identifiers(a, out)
    elif isinstance(n, (FieldNode, VariableNode)):
        out.update(i.lower() for i in n.ident)


def _cut_after_response(root: ListNode) -> ListNode:
    """Ollama's deleteNode: a copy of the tree without anything after the first .Response field
    (in document order; if/range/with conditions are not looked at)."""
    cut = False

    def drop(n) -> bool:
        nonlocal cut
        if isinstance(n, FieldNode) and "Response" in n.ident:
            cut = True
            return False
        return cut

    def walk(n):
        if drop(n):
            return None
        if isinstance(n, ListNode):
            return ListNode([w for w in map(walk, n.nodes) if w is not None], pos=n.pos)
        if isinstance(n, BranchNode):
            body = walk(n.list) or ListNode()
            other = None if n.else_list is None else (walk(n.else_list) or ListNode())
            return BranchNode(n.kind, n.pipe, body, other, pos=n.pos)
        if isinstance(n, ActionNode):
            pipe = walk(n.pipe)
            return None if pipe is None else ActionNode(pipe, pos=n.pos)
        if isinstance(n, PipeNode):
            cmds = []
            for c in n.cmds:
                args = [w for w in map(walk, c.args) if w is not None]
                if not args:
                    return None
                cmds.append(CommandNode(args, pos=c.pos))
            return PipeNode(n.decl, n.is_assign, cmds, pos=n.pos) if cmds else None
        return n

    return walk(root) or ListNode()


# -- request values -> template data --------------------------------------------------
def _get(d: Mapping, *keys, default=None):
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def collate(messages: Iterable[Mapping]) -> tuple[str, list[dict]]:
    """Ollama's collate(): (all system contents joined by "\\n\\n", messages with consecutive
    same-role messages merged by "\\n\\n" except tool messages). Roles are lower-cased."""
    system: list[str] = []
    out: list[dict] = []
    for m in messages:
        m = dict(m)
        role = str(_get(m, "role", "Role", default="")).lower()
        content = _get(m, "content", "Content", default="")
        m.pop("Role", None), m.pop("Content", None)
        m["role"], m["content"] = role, content
        if role == "system":
            system.append(content)
        if out and out[-1]["role"] == role and role != "tool":
            out[-1]["content"] += "\n\n" + content
        else:
            out.append(m)
    return "\n\n".join(system), out


def _tool_call(tc: Mapping) -> Struct:
    fn = _get(tc, "function", "Function", default={})
    args = _get(fn, "arguments", "Arguments", default={})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            args = {}
    return Struct(ID=_get(tc, "id", "ID", default=""),
                  Function=Struct(Index=_get(fn, "index", "Index", default=0),
                                  Name=_get(fn, "name", "Name", default=""), Arguments=JSONMap(args)))


def _message(m: Mapping) -> Struct:
    calls = _get(m, "tool_calls", "ToolCalls", "toolCalls")
    return Struct(Role=m["role"], Content=m["content"], Thinking=_get(m, "thinking", "Thinking", default=""),
                  Images=_get(m, "images", "Images") or None,
                  ToolCalls=[_tool_call(c) for c in calls] if calls else None,
                  ToolName=_get(m, "tool_name", "ToolName", "toolName", default=""),
                  ToolCallID=_get(m, "tool_call_id", "ToolCallID", "toolCallId", default=""))


def _property(p) -> Struct:
    """api.ToolProperty: known fields in Go's order, empty ones omitted; nested properties keep order."""
    if not isinstance(p, Mapping):
        return Struct()
    s = Struct()
    if p.get("anyOf"):
        s["anyOf"] = [_property(x) for x in p["anyOf"]]
    t = p.get("type")
    if isinstance(t, (list, tuple)) and len(t) == 1:
        t = t[0]
    if t:
        s["type"] = t
    for key in ("items", "description", "enum"):
        if p.get(key) not in (None, "", []):
            s[key] = p[key]
    if isinstance(p.get("properties"), Mapping):
        s["properties"] = Struct((k, _property(v)) for k, v in p["properties"].items())
    if p.get("required"):
        s["required"] = list(p["required"])
    return s


def _tool(t: Mapping) -> Struct:
    fn = _get(t, "function", "Function", default={})
    params = _get(fn, "parameters", "Parameters", default={})
    props = _get(params, "properties", "Properties")
    ps = Struct(type=_get(params, "type", "Type", default=""))
    for key in ("$defs", "items", "required"):
        if params.get(key):
            ps[key] = params[key]
    ps["properties"] = JSONMap((k, _property(v)) for k, v in props.items()) if isinstance(props, Mapping) else None
    s = JSONStruct(type=_get(t, "type", "Type", default=""))
    if t.get("items") is not None:
        s["items"] = t["items"]
    s["function"] = Struct(name=_get(fn, "name", "Name", default=""),
                           description=_get(fn, "description", "Description", default=""), parameters=ps)
    return s


def _think_values(think) -> dict:
    if think is None:
        return {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
    if isinstance(think, str):
        return {"Think": think in THINK_LEVELS, "ThinkLevel": think, "IsThinkSet": True}
    return {"Think": bool(think), "ThinkLevel": "medium" if think else "", "IsThinkSet": True}


def render_prompt(template_text: str | None, *, system: str | None = None, messages: Iterable[Mapping] = (),
                  prompt: str | None = None, suffix: str | None = None, tools: list | None = None,
                  think: bool | str | None = None, response: str = "") -> str:
    """Build a prompt the way Ollama's generate and chat handlers do.

    template_text: the model's template (None -> DEFAULT_TEMPLATE).
    system: prepended as a system message unless the messages already start with one (chat's rule;
        for generate pass the request's system, else the model's).
    messages: chat-style dicts {role, content, images?, thinking?, tool_calls?, tool_name?, ...}.
    prompt: generate's prompt, appended as a user message; with a non-empty suffix, a non-empty
        prompt instead renders only {Prompt, Suffix} (fill-in-the-middle) and messages are ignored.
    tools: JSON tool definitions (chat); think: the request's think value (bool or level).
    response: the .Response value in messages and suffix modes (Ollama always uses "").
    """
    tmpl = parse(DEFAULT_TEMPLATE if template_text is None else template_text)
    thinking = _think_values(think)
    msgs = [dict(m) for m in messages]
    if suffix:
        if prompt:
            return tmpl.render({"Prompt": prompt, "Suffix": suffix, "Response": response, **thinking})
        msgs = []
    else:
        if system and not (msgs and str(_get(msgs[0], "role", "Role", default="")).lower() == "system"):
            msgs.insert(0, {"role": "system", "content": system})
        if prompt is not None:
            msgs.append({"role": "user", "content": prompt})
    system_text, collated = collate(msgs)
    if tmpl.uses("messages"):
        return tmpl.render({"System": system_text, "Messages": [_message(m) for m in collated],
                            "Tools": JSONList(_tool(t) for t in tools) if tools else None, "Response": response,
                            **thinking})
    # Legacy: one rendering per user turn.
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(tmpl.render({**turn, **thinking}))
        turn.update(System="", Prompt="", Response="")

    for m in collated:
        if m["role"] == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = m["content"]
        elif m["role"] == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = m["content"]
        elif m["role"] == "assistant":
            turn["Response"] = m["content"]
    out.append(tmpl._render_legacy_last({**turn, **thinking}))
    return "".join(out)
