"""The messages of issue 22's root causes 3-7, as the tests that pin them make the tool print them.

Runs the tests of each root cause under ``pytest -p message_recorder`` (tests/message_recorder.py
records every ``main([...])`` call, every ``ChangedFileError`` and every child process a test
waits for, with the test's name) and prints one Markdown table per root cause: the test, the
command, its exit status and the line it printed. Temporary folders are shortened to the names
the tests gave them (``tiny-llama``, ``tasks/mood``, ``run``, ...). Nothing here is typed by
hand: docs/bad-inputs.md's block between ``<!-- messages:begin -->`` and
``<!-- messages:end -->`` is this script's output (``--write`` puts it there).

    python tests/bad_input_messages.py            # print the tables
    python tests/bad_input_messages.py --write    # and replace the block in docs/bad-inputs.md

Example:
    >>> shorten("/tmp/m/test_a0/run/x.json /tmp/m/tiny-llama0 /tmp/m/test_a0", "/tmp/m")
    'run/x.json tiny-llama .'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DOC = ROOT / "docs" / "bad-inputs.md"
BEGIN, END = "<!-- messages:begin -->", "<!-- messages:end -->"

#: root cause -> (title, test files); the order of the issue
CAUSES = {
    3: ("Changed files are refused naming them", ["tests/test_checksums.py"]),
    4: ("Stage settings checked before the model loads",
        ["tests/test_knob_checks.py", "tests/test_probe.py::test_knob_cases"]),
    5: ("Interrupts", ["tests/test_interrupts.py"]),
    6: ("Messages that name the file, flag or key",
        ["tests/test_messages.py", "tests/test_probe.py::test_message_cases"]),
    7: ("Two-process runs", ["tests/test_process_groups.py"]),
}  # fmt: skip


def shorten(text: str, base: str) -> str:
    """``text`` with the pytest temporary folders under ``base`` cut to their given names."""
    text = re.sub(re.escape(base) + r"/test_[^/\s'\"]*?\d+/", "", text)
    text = re.sub(re.escape(base) + r"/test_[^/\s'\"]*?\d+\b", ".", text)  # the test's folder
    return re.sub(re.escape(base) + r"/([A-Za-z][\w-]*?)\d+\b", r"\1", text)


def record(files: list[str], base: str) -> list[dict]:
    """Run the tests of ``files`` with the recorder; the records, in order."""
    out = Path(base + ".jsonl")
    out.unlink(missing_ok=True)
    env = {**os.environ, "TN_RECORD_MESSAGES": str(out), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(TESTS)])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p"]
    cmd += ["message_recorder", "-m", "", "--basetemp", base, *files]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    print(res.stdout.strip().splitlines()[-1], file=sys.stderr)  # "N passed in ..."
    if res.returncode != 0:
        sys.exit(res.stdout[-5000:])
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def rows(records: list[dict], base: str) -> list[tuple[str, ...]]:
    """``(tests, command, exit, line)`` of what a reader needs: refusals through the command
    line, library refusals of tests that refused nothing through it, and the Python child
    processes; a row made by several tests comes once, naming them all."""
    refusing = {r["test"] for r in records if r["kind"] == "cli" and r["rc"] != 0}
    found: dict[tuple[str, ...], list[str]] = {}
    for r in records:
        line = r["line"]
        if r["kind"] == "cli" and r["rc"] != 0:
            command = "taskneurons " + " ".join(r["argv"])
        elif r["kind"] == "changed" and r["test"] not in refusing:
            command, r = "(library)", {**r, "rc": "raises"}
        elif r["kind"] == "subprocess" and r["argv"][0] == sys.executable:
            command = " ".join(["python", *r["argv"][1:]])
            if r["rc"] == 0:
                held = "holds" if r["aborted"] else "does not hold"
                line = f'(exit 0; stderr {held} "terminate called")'
        else:
            continue
        key = tuple(shorten(str(x), base) for x in (command, r["rc"], line))
        tests = found.setdefault(key, [])
        if _test_name(r["test"]) not in tests:
            tests.append(_test_name(r["test"]))
    return [(", ".join(tests), *key) for key, tests in found.items()]


def _test_name(nodeid: str) -> str:
    """``file.py::test[id]`` -> ``test[id]``; a long parameter id cut to its first part."""
    name = nodeid.split("::", 1)[1]
    if "[" in name and len(name) > 60:
        head, _, param = name.partition("[")
        name = f"{head}[{param.split('-', 1)[0]}]"
    return name


def _code(text: str) -> str:
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def table(cause: int) -> str:
    """The Markdown of one root cause."""
    title, files = CAUSES[cause]
    base = tempfile.mkdtemp(prefix="tn-messages-")
    shutil.rmtree(base)
    found = rows(record(files, base), base)
    lines = [f"### Root cause {cause}: {title}", "", f"Pinned by {', '.join(files)}.", ""]
    lines += ["| test | command | exit | last line printed |", "|---|---|---|---|"]
    lines += [f"| {_code(t)} | {_code(c)} | {rc} | {_code(m)} |" for t, c, rc, m in found]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = "\n".join(table(cause) for cause in CAUSES)
    print(text)
    if "--write" in argv:
        doc = DOC.read_text()
        head, rest = doc.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        DOC.write_text(f"{head}{BEGIN}\n\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
