"""The dashboard's assets ship in the package and load nothing from another host."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import benchkit

DASHBOARD = Path(benchkit.__file__).parent / "server" / "dashboard"
UPLOT = DASHBOARD / "static" / "vendor" / "uplot"

VENDORED = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
}

#: a reference to another host: any http(s) URL but loopback's, or a protocol-relative one
REMOTE = re.compile(
    r"https?://(?!127\.0\.0\.1[:/])[^\s\"'<>)]*|(?<![:\w])//[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+/",
    re.I,
)
#: uPlot's one-line banner names its home page; a comment loads nothing
BANNER = re.compile(r"\A/\*![^\n]*\*/\n")


def test_vendored_uplot_is_the_released_1_6_32_unchanged():
    for name, digest in VENDORED.items():
        assert hashlib.sha256((UPLOT / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (UPLOT / "LICENSE").read_text()


def test_the_wheel_ships_the_dashboard_assets():
    text = (Path(benchkit.__file__).parent.parent / "pyproject.toml").read_text()
    assert '"server/dashboard/static/**/*"' in text
    assert '"server/dashboard/templates/**/*"' in text


def test_no_template_or_static_file_refers_to_another_host():
    text = {".html", ".js", ".css", ".svg", ".json", ".txt"}
    files = [p for p in DASHBOARD.rglob("*") if p.is_file() and p.suffix in text]
    assert any(p.name == "uPlot.iife.min.js" for p in files)
    offenders = []
    for path in files:
        if path.name == "LICENSE":
            continue
        text = BANNER.sub("", path.read_text(encoding="utf-8"))
        offenders += [f"{path.relative_to(DASHBOARD)}: {m}" for m in REMOTE.findall(text)]
    assert offenders == []


def test_the_remote_reference_check_catches_what_it_should():
    for bad in (
        '<script src="https://cdn.example.com/x.js">',
        "url(//fonts.gstatic.com/a)",
        'fetch("http://evil/")',
        "HTTP://localhost:8000/",
    ):
        assert REMOTE.search(bad), bad
    for ok in ("http://127.0.0.1:8000/", "a // comment", "/static/app.js"):
        assert not REMOTE.search(ok), ok
