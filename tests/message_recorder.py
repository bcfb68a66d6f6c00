"""A pytest plugin that records the messages the tests make the tool print (``-p message_recorder``).

Loaded only by ``tests/bad_input_messages.py`` (never by a plain test run). Each record is one
JSON line appended to ``$TN_RECORD_MESSAGES``, naming the test (``nodeid``) that produced it:

* ``cli``: every ``taskneurons.cli.main([...])`` call of a test: its ``argv``, exit status and
  the last line it printed on stderr (the error line, ``interrupted``, ...);
* ``changed``: every ``ChangedFileError`` the library raised (a changed file, refused naming it),
  also the ones a test catches with ``pytest.raises``;
* ``subprocess``: every child process a test waited for (``subprocess.run``, ``communicate``),
  e.g. ``torchrun`` or a child sent a SIGINT: its command, exit status, last stderr line and
  whether stderr holds "terminate called" (the abort of root cause 7).

Example:
    >>> # TN_RECORD_MESSAGES=/tmp/m.jsonl pytest -p message_recorder tests/test_messages.py
"""

from __future__ import annotations

import io
import json
import os
import subprocess

import pytest

import taskneurons._io as tn_io
import taskneurons.cli as cli


def _record(entry: dict) -> None:
    with open(os.environ["TN_RECORD_MESSAGES"], "a") as f:
        f.write(json.dumps(entry) + "\n")


def _last_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line for line in (text or "").replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


class _Tee(io.StringIO):
    """Writes go to ``target`` (pytest's capture) and are kept."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def write(self, text):
        self.target.write(text)
        return super().write(text)


@pytest.fixture(autouse=True)
def _record_messages(request, monkeypatch):
    if not os.environ.get("TN_RECORD_MESSAGES"):
        yield
        return
    test = request.node.nodeid
    inner, init, communicate = (
        cli._main,
        tn_io.ChangedFileError.__init__,
        subprocess.Popen.communicate,
    )

    def main(argv):
        import sys

        tee = _Tee(sys.stderr)
        monkeypatch.setattr(sys, "stderr", tee)
        try:
            code = inner(argv)
        finally:
            monkeypatch.setattr(sys, "stderr", tee.target)
        _record(
            {
                "test": test,
                "kind": "cli",
                "argv": argv,
                "rc": code,
                "line": _last_line(tee.getvalue()),
            }
        )
        return code

    def changed(self, *args):
        init(self, *args)
        _record({"test": test, "kind": "changed", "line": f"ChangedFileError: {self}"})

    def waited(self, *args, **kwargs):
        out, err = communicate(self, *args, **kwargs)
        argv = [str(a) for a in self.args] if isinstance(self.args, list) else [str(self.args)]
        text = err.decode(errors="replace") if isinstance(err, bytes) else err or ""
        entry = {"test": test, "kind": "subprocess", "argv": argv, "rc": self.returncode}
        _record({**entry, "line": _last_line(text), "aborted": "terminate called" in text})
        return out, err

    monkeypatch.setattr(cli, "_main", main)
    monkeypatch.setattr(tn_io.ChangedFileError, "__init__", changed)
    monkeypatch.setattr(subprocess.Popen, "communicate", waited)
    yield
