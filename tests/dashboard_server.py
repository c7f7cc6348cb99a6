"""A real dashboard for browser tests: ``streamlit run dashboard.py`` on a free port, and
Debian's Chromium driven by Playwright (its own browser download does not work on these machines).

    with serve_dashboard(models_root, tmp_path / "streamlit.log") as url, chromium_page() as page:
        page.goto(url.sign_in("/experiments"))  # the printed token URL: sets the cookie, then /experiments
        page.goto(url)                          # later visits carry the cookie

``url`` is the base URL (a str); ``url.token`` is the token the dashboard printed at start-up.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from cli_helpers import REPO, child_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"]
ARTIFACTS = REPO / "test-artifacts"  # screenshots kept after the run (git-ignored)


SIGN_IN_LINE = re.compile(r"(http://\S+)/\?token=(\S+)")


class DashboardURL(str):
    """The served dashboard's base URL, knowing the token its start-up output printed."""

    token: str

    def sign_in(self, path: str = "/") -> str:
        """``path`` with the token: the dashboard sets its cookie and redirects to ``path``."""
        separator = "&" if "?" in path else "?"
        return f"{self}{path}{separator}token={self.token}"


def printed_sign_in(log: Path) -> tuple[str, str] | None:
    """(base URL, token) from the sign-in line the dashboard prints once it listens."""
    match = SIGN_IN_LINE.search(log.read_text(errors="replace"))
    return (match.group(1), match.group(2)) if match else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_browser() -> None:
    """Skip (with the reason) where Chromium or Playwright is missing; run_tests.sh installs both."""
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        pytest.skip("chromium is not installed (run_tests.sh installs it with apt-get as root)")
    pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def serve_dashboard(models_root: Path, log: Path, timeout: float = 90,
                    env: dict[str, str] | None = None) -> Iterator[DashboardURL]:
    """Start the dashboard as a real OS process on a free port; yield its URL; stop it."""
    port = free_port()
    argv = [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard.py"),
            "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--", "--models_root", str(models_root)]
    env = dict(child_env(), **(env or {}))
    env.pop("MODELS_ROOT", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    printed = printed_sign_in(log)
                    if r.status == 200 and printed:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not become healthy: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        assert printed[0] == url, f"the sign-in URL {printed[0]} is not the served {url}"
        served = DashboardURL(url)
        served.token = printed[1]
        yield served
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    """A Playwright page in Debian's Chromium with the flags these machines need."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM,
                                     args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    """Keep a screenshot as a test artifact under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
