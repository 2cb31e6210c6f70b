"""Driving `cosmogen accounts connect` as a person would, for the CLI tests: start the command, read the
authorization URL it prints, let the "browser" (urllib) GET it at the simulator's /oauth/authorize, and
deliver the redirect to the command's loopback listener. Everything the person could see is recorded
(OA-13 searches it for tokens)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.oauth_harness import follow_authorization

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Seen:
    """What a person saw: printed output, URLs in the address bar, pages shown."""

    texts: list[str] = field(default_factory=list)

    def add(self, *texts: str) -> None:
        self.texts.extend(texts)


@dataclass
class Connecting:
    process: subprocess.Popen[str]
    url: str
    first_lines: list[str]


def start_connect(data_dir: Path, *args: str, stdin: str = "") -> Connecting:
    env = {**os.environ, "COLUMNS": "120", "COSMOGEN_DATA_DIR": str(data_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "cosmogen", "accounts", "connect", *args, "--no-open"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(stdin)
    process.stdin.close()
    process.stdin = None  # communicate() must not flush it again
    lines: list[str] = []
    while True:
        line = process.stdout.readline()
        if not line:  # the command ended before printing a URL
            return Connecting(process, "", lines)
        lines.append(line)
        if line.startswith("http"):
            return Connecting(process, line.strip(), lines)


def finish(connecting: Connecting, timeout: float = 60) -> tuple[int, str, str]:
    out, err = connecting.process.communicate(timeout=timeout)
    return connecting.process.returncode, "".join(connecting.first_lines) + out, err


def browse(url: str) -> tuple[int, str, dict[str, str]]:
    """GET a page as the browser does (no redirect following: the caller follows)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - 127.0.0.1 only
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def approve(connecting: Connecting, seen: Seen) -> tuple[str, dict[str, str], int, str]:
    """The browser's part: the authorization URL, the server's redirect, the listener's page."""
    location, _ = follow_authorization(connecting.url)
    status, page, headers = browse(location)
    seen.add(connecting.url, location, page, repr(headers))
    assert urlsplit(location).path == "/oauth/callback"
    return location, dict(parse_qsl(urlsplit(location).query)), status, page
