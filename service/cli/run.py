"""`corral run MODEL [PROMPT]`: a one-shot answer, or Ollama's interactive chat session.

With a prompt (or text on standard input, or output to a pipe) it streams one Generate answer and exits.
Otherwise, on a terminal, it opens a session like `ollama run`: ">>> " prompts read with GNU readline
(line editing, history), multi-line messages between \"\"\" marks, slash commands (/set, /show, /load,
/save, /clear, /bye, /?), and streamed Chat replies. Ctrl-C stops a reply (the call is cancelled, so the
server stops generating) and the session goes on; Ctrl-D or /bye leaves. A model that is not local is
pulled first, as Ollama does. The commands' texts follow Ollama's cmd/interactive.go.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace
from typing import TextIO

import grpc
from rich.console import Console

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.structs import dict_to_struct
from corral.service.cli import fmt
from corral.service.cli.client import EXIT_INTERRUPTED, Client, CliError, is_connection_error
from corral.service.cli.models import embed_texts, keep_alive, list_models, show_info
from corral.service.cli.transfer import pull_model
from corral.store.errors import CorralError
from corral.store.gocompat import go_quote
from corral.store.modelfile import parse_parameter

PROMPT, ALT_PROMPT = ">>> ", "... "
MULTILINE = '"""'


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def usage() -> None:
    _err("Available Commands:",
         "  /set            Set session variables",
         "  /show           Show model information",
         "  /load <model>   Load a session or model",
         "  /save <model>   Save your current session",
         "  /clear          Clear session context",
         "  /bye            Exit",
         "  /?, /help       Help for a command",
         "  /? shortcuts    Help for keyboard shortcuts",
         "",
         'Use """ to begin a multi-line message.',
         "")


def usage_set() -> None:
    _err("Available Commands:",
         "  /set parameter ...     Set a parameter",
         "  /set system <string>   Set system message",
         "  /set format json       Enable JSON mode",
         "  /set noformat          Disable formatting",
         "  /set think             Enable thinking",
         "  /set nothink           Disable thinking",
         "  /set verbose           Show LLM stats",
         "  /set quiet             Disable LLM stats",
         "")


def usage_shortcuts() -> None:
    _err("Available keyboard shortcuts:",
         "  Ctrl + a            Move to the beginning of the line (Home)",
         "  Ctrl + e            Move to the end of the line (End)",
         "   Alt + b            Move back (left) one word",
         "   Alt + f            Move forward (right) one word",
         "  Ctrl + k            Delete the sentence after the cursor",
         "  Ctrl + u            Delete the sentence before the cursor",
         "  Ctrl + w            Delete the word before the cursor",
         "",
         "  Ctrl + l            Clear the screen",
         "  Ctrl + c            Stop the model from responding",
         "  Ctrl + d            Exit corral (/bye)",
         "")


def usage_show() -> None:
    _err("Available Commands:",
         "  /show info         Show details for this model",
         "  /show license      Show model license",
         "  /show modelfile    Show Modelfile for this model",
         "  /show parameters   Show parameters for this model",
         "  /show system       Show system message",
         "  /show template     Show prompt template",
         "")


def usage_parameters() -> None:
    _err("Available Parameters:",
         "  /set parameter seed <int>             Random number seed",
         "  /set parameter num_predict <int>      Max number of tokens to predict",
         "  /set parameter top_k <int>            Pick from top k num of tokens",
         "  /set parameter top_p <float>          Pick token based on sum of probabilities",
         "  /set parameter min_p <float>          Pick token based on top token probability * min_p",
         "  /set parameter num_ctx <int>          Set the context size",
         "  /set parameter temperature <float>    Set creativity level",
         "  /set parameter repeat_penalty <float> How strongly to penalize repetitions",
         "  /set parameter repeat_last_n <int>    Set how far back to look for repetitions",
         "  /set parameter num_gpu <int>          The number of layers to send to the GPU",
         "  /set parameter stop <string> <string> ...   Set the stop parameters",
         "")


class _Waiting:
    """A spinner on stderr until the first piece of an answer arrives (nothing when stderr is not a terminal)."""

    def __init__(self):
        console = Console(stderr=True)
        self.status = console.status("", spinner="dots") if console.is_terminal else None
        if self.status is not None:
            self.status.start()

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _not_found(err: grpc.RpcError) -> bool:
    return err.code() == grpc.StatusCode.NOT_FOUND


class Session:
    """The state `ollama run` keeps: model, options, system prompt, format, conversation."""

    def __init__(self, client: Client, model: str, args, out: TextIO | None = None):
        self.client = client
        self.model = model
        self.options: dict = {}
        self.system = ""
        self.format = args.format or ""
        self.keep = keep_alive(args.keepalive)
        self.verbose = bool(args.verbose)
        self.think = getattr(args, "think", None) or ""  # "" lets the model decide, as Ollama's run does
        self.hide_thinking = bool(getattr(args, "hidethinking", False))
        self.messages: list[pb.Message] = []
        self.loaded: list[pb.Message] = []
        self.out = out or sys.stdout

    @property
    def stub(self):
        return self.client.stub

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _common(self, req) -> None:
        if self.options:
            req.options.CopyFrom(dict_to_struct(self.options))
        if self.keep is not None:
            req.keep_alive.CopyFrom(self.keep)
        req.format = self.format
        req.think = self.think

    # -- requests --------------------------------------------------------------------------------------------

    def load(self) -> None:
        """An empty generate: the server loads the model (so the first answer does not wait for it)."""
        req = pb.GenerateRequest(model=self.model)
        if self.keep is not None:
            req.keep_alive.CopyFrom(self.keep)
        waiting = _Waiting()
        try:
            for _ in self.stub.Generate(req):
                pass
        finally:
            waiting.stop()

    def _stream(self, call, piece, reasoning=lambda r: "") -> tuple[str, object, bool]:
        """Writes each piece of a streamed answer, its reasoning first between Ollama's "Thinking..." and
        "...done thinking." lines (unless hidden); returns (text, last message, interrupted by Ctrl-C)."""
        parts: list[str] = []
        last = None
        thinking = False
        waiting = _Waiting()
        try:
            for last in call:
                waiting.stop()
                thought = reasoning(last)
                if thought and not self.hide_thinking:
                    if not thinking:
                        self.write("Thinking...\n")
                        thinking = True
                    self.write(thought)
                text = piece(last)
                if text and thinking:
                    self.write("\n...done thinking.\n\n")
                    thinking = False
                if text:
                    parts.append(text)
                    self.write(text)
        except KeyboardInterrupt:
            call.cancel()  # the server sees the cancellation and stops generating
            return "".join(parts), last, True
        finally:
            waiting.stop()
        return "".join(parts), last, False

    def _summary(self, last) -> None:
        if self.verbose and last is not None and last.done:
            sys.stderr.write(fmt.metrics_summary(last.metrics))

    def generate(self, prompt: str) -> int:
        req = pb.GenerateRequest(model=self.model, prompt=prompt)
        self._common(req)
        _, last, interrupted = self._stream(self.stub.Generate(req), lambda r: r.response, lambda r: r.thinking)
        if interrupted:
            self.write("\n")
            return EXIT_INTERRUPTED
        if prompt:
            self.write("\n\n")
        self._summary(last)
        return 0

    def chat(self) -> pb.Message | None:
        req = pb.ChatRequest(model=self.model, messages=self.messages)
        self._common(req)
        text, last, interrupted = self._stream(self.stub.Chat(req), lambda r: r.message.content,
                                               lambda r: r.message.thinking)
        self.write("\n\n")
        if interrupted:
            return None
        self._summary(last)
        return pb.Message(role="assistant", content=text)

    def show_request(self) -> pb.ShowResponse:
        req = pb.ShowRequest(model=self.model)
        if self.system:
            req.system = self.system
        if self.options:
            req.options.CopyFrom(dict_to_struct(self.options))
        return self.stub.Show(req)

    # -- the interactive loop ----------------------------------------------------------------------------------

    def interactive(self) -> int:
        try:
            import readline  # noqa: F401  (input() then edits lines and keeps history)
        except ImportError:
            pass
        self.load()
        for m in self.loaded:
            if m.role == "user":
                print(f">>> {m.content}")
            elif m.role == "assistant":
                print(m.content + "\n")
        buffer = ""
        multiline = ""  # "", "prompt" or "system"
        while True:
            try:
                line = input(ALT_PROMPT if multiline else PROMPT)
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:
                if not multiline:
                    print("\nUse Ctrl + d or /bye to exit.")
                else:
                    print()
                buffer, multiline = "", ""
                continue

            if multiline:
                ended = line.endswith(MULTILINE)
                buffer += line[: -len(MULTILINE)] if ended else line
                if not ended:
                    buffer += "\n"
                    continue
                if multiline == "system":
                    self.set_system(buffer)
                    print("Set system message.")
                    buffer = ""
                multiline = ""
            elif line.startswith(MULTILINE):
                rest = line[len(MULTILINE):]
                ended = rest.endswith(MULTILINE)
                buffer += rest[: -len(MULTILINE)] if ended else rest
                if not ended:
                    buffer += "\n"
                    multiline = "prompt"
            elif line.startswith("/"):
                result = self.command(line)
                if result == "bye":
                    return 0
                if isinstance(result, tuple):  # /set system """ ... : the text goes on on the next lines
                    multiline, buffer = result
                continue
            else:
                buffer += line

            if buffer and not multiline:
                self.send(buffer)
                buffer = ""

    def send(self, text: str) -> None:
        self.messages.append(pb.Message(role="user", content=text))
        try:
            reply = self.chat()
        except grpc.RpcError as err:
            if is_connection_error(err):
                raise
            self.messages.pop()
            print(f"Error: {err.details()}", file=sys.stderr)
            return
        if reply is None:  # stopped with Ctrl-C: the unanswered message leaves the conversation too
            self.messages.pop()
        else:
            self.messages.append(reply)

    def set_system(self, text: str) -> None:
        self.system = text
        message = pb.Message(role="system", content=text)
        if self.messages and self.messages[-1].role == "system":
            self.messages[-1].CopyFrom(message)
        else:
            self.messages.append(message)

    def command(self, line: str):
        """One slash command; returns "bye" to leave, or (mode, text) to start a multi-line system message."""
        args = line.split()
        name = args[0]
        if name in ("/bye", "/exit"):
            return "bye"
        if name in ("/?", "/help"):
            topic = args[1] if len(args) > 1 else ""
            {"set": usage_set, "/set": usage_set, "show": usage_show, "/show": usage_show,
             "shortcut": usage_shortcuts, "shortcuts": usage_shortcuts}.get(topic, usage)()
        elif name == "/set":
            return self.command_set(line, args)
        elif name == "/show":
            self.command_show(args)
        elif name == "/list":
            list_models(self.client, SimpleNamespace(prefix=args[1] if len(args) > 1 else ""))
        elif name == "/clear":
            self.messages = [pb.Message(role="system", content=self.system)] if self.system else []
            print("Cleared session context")
        elif name == "/load":
            self.command_load(args)
        elif name == "/save":
            self.command_save(args)
        else:
            print(f"Unknown command '{name}'. Type /? for help")
        return None

    def command_set(self, line: str, args: list[str]):
        if len(args) < 2:
            usage_set()
            return None
        what = args[1]
        if what == "parameter":
            if len(args) < 4:
                usage_parameters()
                return None
            key, values = args[2], args[3:]
            try:
                value = parse_parameter(key, values[0])
            except CorralError as err:
                print(f"Couldn't set parameter: {go_quote(err.message)}")
                return None
            self.options[key] = list(values) if isinstance(value, list) else value
            print(f"Set parameter '{key}' to '{', '.join(values)}'")
        elif what == "system":
            if len(args) < 3:
                usage_set()
                return None
            text = line.split(None, 2)[2]
            if text.startswith(MULTILINE):
                text = text[len(MULTILINE):]
                if not text.endswith(MULTILINE):
                    return ("system", text + "\n")
                text = text[: -len(MULTILINE)]
            self.set_system(text)
            print("Set system message.")
        elif what == "format":
            if len(args) < 3 or args[2] != "json":
                print("Invalid or missing format. For 'json' mode use '/set format json'")
            else:
                self.format = "json"
                print("Set format to 'json' mode.")
        elif what == "noformat":
            self.format = ""
            print("Disabled format.")
        elif what in ("think", "nothink"):
            self.think = "true" if what == "think" else "false"
            print("Set 'think' mode." if what == "think" else "Set 'nothink' mode.")
        elif what == "verbose":
            self.verbose = True
            print("Set 'verbose' mode.")
        elif what == "quiet":
            self.verbose = False
            print("Set 'quiet' mode.")
        else:
            print(f"Unknown command '/set {what}'. Type /? for help")
        return None

    def command_show(self, args: list[str]) -> None:
        if len(args) < 2:
            usage_show()
            return
        try:
            resp = self.show_request()
        except grpc.RpcError as err:
            if is_connection_error(err):
                raise
            print(f"error: couldn't get model: {err.details()}")
            return
        what = args[1]
        if what == "info":
            sys.stderr.write(show_info(resp))
        elif what == "license":
            print(resp.license or "No license was specified for this model.")
        elif what == "modelfile":
            print(resp.modelfile)
        elif what == "parameters":
            print("Model defined parameters:")
            if not resp.parameters:
                print("  No additional parameters were specified for this model.")
            else:
                for line in resp.parameters.split("\n"):
                    print(f"  {line}")
            print()
            if self.options:
                print("User defined parameters:")
                for key, value in self.options.items():
                    print(f"  {key:<30} {fmt.go_value(value)}")
                print()
        elif what == "system":
            if self.system or resp.system:
                print((self.system or resp.system) + "\n")
            else:
                print("No system message was specified for this model.")
        elif what == "template":
            print(resp.template or "No prompt template was specified for this model.")
        else:
            print(f"Unknown command '/show {what}'. Type /? for help")

    def command_load(self, args: list[str]) -> None:
        if len(args) != 2:
            print("Usage:\n  /load <modelname>")
            return
        name = args[1]
        print(f"Loading model '{name}'")
        previous = self.model
        try:
            info = self.stub.Show(pb.ShowRequest(model=name))
            self.model = name
            self.load()
        except grpc.RpcError as err:
            self.model = previous
            if is_connection_error(err):
                raise
            if _not_found(err):
                print(f"Couldn't find model '{name}'")
            else:
                print(f"error: {err.details()}")
            return
        self.messages = []
        self.loaded = list(info.messages)

    def command_save(self, args: list[str]) -> None:
        if len(args) != 2:
            print("Usage:\n  /save <modelname>")
            return
        req = pb.CreateRequest(model=args[1], messages=[*self.loaded, *self.messages])
        setattr(req, "from", self.model)
        if self.system:
            req.system = self.system
        if self.options:
            req.parameters.CopyFrom(dict_to_struct(self.options))
        try:
            for _ in self.stub.Create(req):
                pass
        except grpc.RpcError as err:
            if is_connection_error(err):
                raise
            if "invalid model name" in (err.details() or ""):
                print(f"error: The model name '{args[1]}' is invalid")
            else:
                print(f"error: {err.details()}")
            return
        print(f"Created new model '{args[1]}'")


def show_or_pull(client: Client, model: str, insecure: bool) -> pb.ShowResponse:
    """The model's details, pulling it first when it is not in the local store (as `ollama run` does)."""
    try:
        return client.stub.Show(pb.ShowRequest(model=model))
    except grpc.RpcError as err:
        if not _not_found(err):
            raise
    pull_model(client, model, insecure)
    return client.stub.Show(pb.ShowRequest(model=model))


def run(client: Client, args) -> int:
    session = Session(client, args.model, args)  # checks --keepalive before any request
    prompts = list(args.prompt)
    interactive = not prompts
    if not sys.stdin.isatty():
        text = sys.stdin.read()
        if text:
            prompts.insert(0, text)
        interactive = False
    if not sys.stdout.isatty():
        interactive = False
    prompt = " ".join(prompts)

    info = show_or_pull(client, args.model, args.insecure)
    caps = set(info.capabilities)
    if "embedding" in caps and "completion" not in caps:
        if not prompt:
            raise CliError(f'embedding models require input text. Usage: corral run {args.model} "your text here"')
        (vector,) = embed_texts(client, args.model, [prompt], keep=session.keep)
        print(json.dumps(vector, separators=(",", ":")))
        return 0
    session.loaded = list(info.messages)
    if interactive:
        return session.interactive()
    return session.generate(prompt)
