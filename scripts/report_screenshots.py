"""Look at a report page as a person would: render it in headless Chromium, save screenshots.

    python scripts/report_screenshots.py runs/demo/report.html --out docs

writes ``docs/report-overview.png`` (the top of the page) and one picture per part
(``report-deactivate.png``, ``report-table2.png``, ``report-cards.png``): for a part, a copy of
the page with one CSS rule added that hides every other part (no script, nothing fetched) is
rendered, and the picture is cut at the end of the content. Needs ``chromium`` (Debian's
package: ``apt-get install -y chromium``) and Pillow (a matplotlib dependency).

:func:`console_messages` loads a page and returns what it wrote to the browser console;
:func:`page_requests` the URLs it asked the network for (the network is unreachable here);
``tests/test_report_browser.py`` uses both.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: part name -> CSS selector of what stays visible in the run column
PARTS = {
    "deactivate": "#stage-deactivate",
    "table2": "#stage-table2",
    "cards": "[id$='-layers'], [id$='-cards']",
}
#: the browser, by the names Debian and others give it
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: flags of every run: headless, no GPU, no network (a request fails and is logged)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def browser() -> str | None:
    """The Chromium executable on ``PATH`` (``None``: none installed)."""
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def console_messages(page: Path, timeout: float = 120) -> tuple[list[str], str]:
    """``(console lines, the DOM after load)`` of ``page`` opened in headless Chromium."""
    run = subprocess.run(
        [browser() or "chromium", *FLAGS, "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    lines = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return lines, run.stdout


def page_requests(page: Path, timeout: float = 120) -> list[str]:
    """The URLs ``page`` itself asked the network for (the browser's own background requests
    left out: only those made for a ``file://`` page), from Chromium's net log."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "net.json"
        subprocess.run(
            [browser() or "chromium", *FLAGS, f"--log-net-log={log}",
             "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
        events = json.loads(log.read_text(encoding="utf-8")).get("events", [])
    urls = [
        e["params"]["url"]
        for e in events
        if "url" in e.get("params", {})
        and str(e["params"].get("network_isolation_key", "")).startswith("file://")
    ]
    return sorted({u for u in urls if not u.startswith(("file:", "data:"))})


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 1100) -> Path:
    """A ``width`` x ``height`` screenshot of ``page``, cut below the last content row."""
    subprocess.run(
        [browser() or "chromium", *FLAGS, f"--window-size={width},{height}",
         f"--screenshot={out}", page.resolve().as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return trim(out)


def trim(path: Path, margin: int = 16) -> Path:
    """Cut the picture below its last row that is not the page background."""
    from PIL import Image, ImageChops

    image = Image.open(path).convert("RGB")
    background = Image.new("RGB", image.size, image.getpixel((image.width - 1, image.height - 1)))
    box = ImageChops.difference(image, background).getbbox()
    if box is not None:
        image.crop((0, 0, image.width, min(image.height, box[3] + margin))).save(path)
    return path


def focused(page: Path, selector: str, folder: Path) -> Path:
    """A copy of ``page`` showing only the parts ``selector`` picks (one added CSS rule)."""
    rule = f".run > section:not({selector}), .run > details {{ display: none; }}"
    text = page.read_text(encoding="utf-8")
    text = re.sub("</style>", rule + "\n</style>", text, count=1)
    out = folder / page.name
    out.write_text(text, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, nargs="?", default=Path("runs/demo/report.html"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    if browser() is None:
        print("no chromium on PATH: apt-get install -y chromium", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    shots = [screenshot(args.report, args.out / "report-overview.png")]
    text = args.report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        for name, selector in PARTS.items():
            anchor = selector.split(",")[0].strip("#[]").split("$=")[-1].strip("'")
            if anchor not in text:  # the run has no such part
                continue
            page = focused(args.report, selector, Path(tmp))
            shots.append(screenshot(page, args.out / f"report-{name}.png", height=2400))
    for shot in shots:
        print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
