"""`corral pull` and `corral push`: the server's progress stream drawn as Ollama draws it, on stderr.

Each status without a digest ("pulling manifest", "verifying sha256 digest", "success") is a line with a
spinner while it is the current step; each layer gets a bar with its percentage, bytes done and total
("1.2/4.7 GB"), speed and time left, kept in the order the server sent them. On a terminal the display
redraws in place (rich); written to a file or a pipe it appears once, in its final state, when the
transfer ends, so logs hold one clean copy instead of hundreds of redraws.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

from rich import filesize
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.spinner import Spinner
from rich.table import Column
from rich.text import Text

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.cli.client import Client
from corral.store.names import parse_name


class SpeedColumn(ProgressColumn):
    """Bytes per second: the recent rate while a layer moves, its average once done (blank when unknown)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.finished and task.finished_time and task.finished_time >= 0.05:
            speed = task.completed / task.finished_time
        if not speed:
            return Text("")
        return Text(f"{filesize.decimal(int(speed))}/s", style="progress.data.speed")


class TransferProgress(Progress):
    """Status lines and per-layer bars in arrival order (rich's Progress draws one table of all tasks)."""

    def __init__(self, console: Console):
        super().__init__(
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            TaskProgressColumn(),
            BarColumn(bar_width=20),
            DownloadColumn(table_column=Column(no_wrap=True)),
            SpeedColumn(table_column=Column(no_wrap=True)),
            TimeRemainingColumn(elapsed_when_finished=True, table_column=Column(no_wrap=True)),
            console=console,
            refresh_per_second=8,
        )
        self._spinners: dict[TaskID, Spinner] = {}

    def get_renderables(self) -> Iterable[RenderableType]:
        layers = []
        for task in self.tasks:
            if task.fields.get("layer"):
                layers.append(task)
                continue
            if layers:
                yield self.make_tasks_table(layers)
                layers = []
            if task.finished:
                yield Text(task.description)
            else:
                yield self._spinners.setdefault(task.id, Spinner("dots", text=task.description, style="default"))
        if layers:
            yield self.make_tasks_table(layers)


def show_progress(lines: Iterator[pb.ProgressResponse], verb: str, console: Console | None = None) -> None:
    """Draws a Create/Pull/Push progress stream until it ends (errors propagate after the final draw).

    The display starts with the first line, so a call that fails at once (no server) draws nothing."""
    progress = TransferProgress(console or Console(stderr=True))
    layers: dict[str, TaskID] = {}
    status: TaskID | None = None
    last = ""

    def finish_status() -> None:
        nonlocal status
        if status is not None:
            progress.update(status, total=1, completed=1)
            status = None

    try:
        for line in lines:
            if not progress.live.is_started:
                progress.start()
            if line.digest:
                finish_status()
                task = layers.get(line.digest)
                if task is None:
                    label = line.status or f"{verb} {line.digest.removeprefix('sha256:')[:12]}"
                    task = layers[line.digest] = progress.add_task(label, total=line.total or None, layer=True)
                progress.update(task, total=line.total or None, completed=line.completed)
            elif line.status != last:
                finish_status()
                status = progress.add_task(line.status, total=None, layer=False)
            last = line.status
    finally:
        finish_status()
        if progress.live.is_started:
            progress.stop()


def pull_model(client: Client, model: str, insecure: bool = False) -> None:
    show_progress(client.stub.Pull(pb.PullRequest(model=model, insecure=insecure)), "pulling")


def pull(client: Client, args) -> int:
    pull_model(client, args.model, args.insecure)
    return 0


def push(client: Client, args) -> int:
    show_progress(client.stub.Push(pb.PushRequest(model=args.model, insecure=args.insecure)), "pushing")
    name = parse_name(args.model)
    sys.stdout.write(f"\nYou can find your model at:\n\n\t{name.full if name.is_valid() else args.model}\n")
    return 0
