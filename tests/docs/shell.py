"""A terminal for documentation tests: one persistent bash, commands typed in order.

Each foreground command runs to completion and its exit status is read back; a command ending in
``&`` is a service: it runs in the background and the session waits for its ``ready:`` line, as
a person waits for a server to say it is listening. Exports and the working directory carry over
from one command to the next, exactly as in a terminal. ``close`` stops the services with SIGTERM
and returns everything they printed.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from crucible.neurons.lifecycle import READY

__all__ = ["CommandFailed", "Session", "code_blocks", "is_service"]


class CommandFailed(AssertionError):
    pass


@dataclass
class Session:
    cwd: Path
    env: dict[str, str]
    transcript: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=self.cwd, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.services = 0

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _type(self, text: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(text + "\n")
        self._proc.stdin.flush()

    def _read_until(
        self, done, timeout_s: float, command: str, pid: int | None = None
    ) -> list[str]:
        """Lines up to the one ``done`` accepts; fails past the deadline or, with ``pid``, when
        that process has exited (a service that died instead of getting ready)."""
        deadline, seen = time.monotonic() + timeout_s, []
        while True:
            try:
                line = self._lines.get(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                if pid is not None and not Path(f"/proc/{pid}").exists():
                    raise CommandFailed(f"`{command}` exited:\n" + "\n".join(seen[-40:])) from None
                if time.monotonic() > deadline:
                    raise CommandFailed(
                        f"`{command}` did not finish: " + "\n".join(seen[-40:])
                    ) from None
                continue
            if line is None:
                raise CommandFailed(f"the shell ended during `{command}`: " + "\n".join(seen[-40:]))
            self.transcript.append(line)
            seen.append(line)
            if done(line):
                return seen

    def run(self, command: str, timeout_s: float = 600) -> list[str]:
        """Type one command; returns its output lines; raises if its exit status is not 0."""
        self.transcript.append(f"$ {command}")
        started = time.monotonic()
        marker = f"__exit_{uuid.uuid4().hex}__"
        if is_service(command):
            self._type(f"{command}\necho {marker}$!")
            pid = int(
                self._read_until(lambda line: line.startswith(marker), 30, command)[-1][
                    len(marker) :
                ]
            )
            self.services += 1
            lines = self._read_until(lambda line: line.startswith(READY), 180, command, pid)
            self.transcript.append(f"  ({time.monotonic() - started:.1f} s to ready)")
            return lines
        # stdin from /dev/null, as in a terminal where nothing is typed ahead (the braces and the
        # newline keep a trailing "# comment" from swallowing the redirection)
        self._type(f"{{ {command}\n}} </dev/null\necho {marker}$?")
        lines = self._read_until(lambda line: line.startswith(marker), timeout_s, command)
        self.transcript.append(f"  ({time.monotonic() - started:.1f} s)")
        status = int(lines[-1][len(marker) :])
        if status != 0:
            raise CommandFailed(f"`{command}` exited {status}:\n" + "\n".join(lines[-60:-1]))
        return lines[:-1]

    def close(self, timeout_s: float = 60) -> list[str]:
        """SIGTERM every service (as an operator would), wait for them, end the shell."""
        marker = f"__closed_{uuid.uuid4().hex}__"
        self._type(f"kill -TERM $(jobs -p) 2>/dev/null; wait; echo {marker}")
        try:
            return self._read_until(lambda line: line == marker, timeout_s, "stopping services")
        finally:
            if self._proc.poll() is None:
                self._type("exit")
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                    self._proc.wait()


def is_service(command: str) -> bool:
    """A command whose last word (before any comment) is ``&``."""
    words = shlex.split(command, comments=True)
    return bool(words) and words[-1] == "&"


def code_blocks(markdown: str, start: str, end: str = "\n## ") -> list[tuple[str, str]]:
    """(language, text) of every fenced block between the heading ``start`` and the next ``end``."""
    section = markdown[markdown.index(start) :]
    cut = section.find(end, len(start))
    section = section if cut < 0 else section[:cut]
    blocks, lang, body, inside = [], "", [], False
    for line in section.splitlines():
        if line.startswith("```"):
            if inside:
                blocks.append((lang, "\n".join(body) + "\n"))
            inside, lang, body = not inside, line[3:].strip(), []
        elif inside:
            body.append(line)
    return blocks
