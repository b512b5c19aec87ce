"""A real JupyterLab server and a headless Chromium, for browser tests.

Shared by the notebook tests and the JupyterLab extension's tests::

    from tests.labserver import LabServer, chromium, require_browser, open_notebook

    def test_something(tmp_path):
        require_browser()                     # skip (or fail under CI) when unavailable
        with LabServer(tmp_path, env={"LLMSPEND_HOME": str(tmp_path)}) as lab, \\
                chromium() as browser:
            page = browser.new_page()
            open_notebook(page, lab, "demo.ipynb")
            run_all_cells(page)
            ...

:class:`LabServer` starts ``jupyter lab`` on a free ``127.0.0.1`` port with a random
token, a given root directory and extra environment, isolated from the user's Jupyter
config, runtime and workspace directories, and with nothing that reaches the network
(news, update checks, the PyPI extension manager); ``start()`` returns once
``/api/status`` answers, ``stop()`` ends the server and its kernels (its own process
group). :func:`chromium` launches Debian's ``/usr/bin/chromium`` through Playwright
(never ``playwright install``). The page helpers wait on what JupyterLab shows
(the kernel status ``Idle`` in the status bar, the execution prompts), never on sleeps.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

__all__ = [
    "CHROMIUM_ARGS",
    "CHROMIUM_PATH",
    "LabServer",
    "LabUnavailable",
    "browser_unavailable",
    "chromium",
    "free_port",
    "open_notebook",
    "require_browser",
    "run_all_cells",
    "wait_kernel_idle",
]

CHROMIUM_PATH = os.environ.get("LLMSPEND_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


class LabUnavailable(RuntimeError):
    """JupyterLab could not be started (the message has the end of its log)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabServer:
    """A JupyterLab server for one test (or session); use as a context manager."""

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        token: str | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        startup_timeout: float = 60.0,
    ) -> None:
        self.root_dir = Path(root_dir).resolve()
        self.token = token or secrets.token_hex(16)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.python = python
        self.startup_timeout = startup_timeout
        self._env_extra = dict(env or {})
        self._home = Path(tempfile.mkdtemp(prefix="labserver-"))
        self.log_path = self._home / "jupyter.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, path: str = "", *, reset: bool = True) -> str:
        """The URL that opens JupyterLab (on ``path`` under the root, if given)."""
        where = f"/lab/tree/{path}" if path else "/lab"
        query = ("reset&" if reset else "") + f"token={self.token}"
        return f"{self.url}{where}?{query}"

    def command(self) -> list[str]:
        """The ``jupyter lab`` command line this server runs."""
        return [
            self.python, "-m", "jupyterlab",
            "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.news_url=None",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            f"--LabApp.workspaces_dir={self._home / 'workspaces'}",
            f"--LabApp.user_settings_dir={self._home / 'settings'}",
            *self.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, isolated Jupyter dirs, then ``env``."""
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(self._home / "config"),
            JUPYTER_RUNTIME_DIR=str(self._home / "runtime"),
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_DATA_DIR", None)
        env.update(self._env_extra)
        return env

    def start(self) -> LabServer:
        """Start the server and wait until it answers (raises :class:`LabUnavailable`)."""
        if self.proc is not None:
            return self
        self.root_dir.mkdir(parents=True, exist_ok=True)
        # no "would you like news?" toast over the page
        news = self._home / "settings" / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True, exist_ok=True)
        (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.root_dir,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends kernels too
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabUnavailable(f"jupyter lab exited early:\n{self.log_tail()}")
            try:
                self.api("/api/status", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        self.stop()
        raise LabUnavailable(
            f"jupyter lab was not ready in {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def api(self, path: str, *, method: str = "GET", body: Any = None, timeout: float = 10) -> Any:
        """Call the server's REST API with the token; returns the decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server and its kernels (SIGTERM to its process group, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if proc is not None:
            # kernels started by the server live in its group; make sure they are gone
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self._home / "runtime", ignore_errors=True)

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- availability --------------------------------------------------------------------------------


def browser_unavailable() -> str | None:
    """Why a browser test cannot run here (``None`` when it can)."""
    import importlib.util

    for module in ("jupyterlab", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[dev]')"
    if not (os.path.isfile(CHROMIUM_PATH) and os.access(CHROMIUM_PATH, os.X_OK)):
        return f"no Chromium at {CHROMIUM_PATH} (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip the calling test when JupyterLab/Playwright/Chromium are missing; under CI
    (``CI`` set) that is a failure instead."""
    import pytest

    reason = browser_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI needs a browser for this test: {reason}")
    pytest.skip(reason)


@contextmanager
def chromium(*, args: Sequence[str] = ()) -> Iterator[Any]:
    """A headless Chromium (Debian's, via Playwright); yields a Playwright ``Browser``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=[*CHROMIUM_ARGS, *args]
        )
        try:
            yield browser
        finally:
            browser.close()


# -- JupyterLab page helpers ---------------------------------------------------------------------


def wait_kernel_idle(page: Any, *, timeout: float = 60) -> None:
    """Wait until the status bar says the kernel is ``Idle`` (connected and not busy)."""
    page.wait_for_function(
        """() => {
            const items = [...document.querySelectorAll('.jp-StatusBar-TextItem')];
            return items.some(e => /\\|\\s*Idle/.test(e.textContent || ''));
        }""",
        timeout=timeout * 1000,
    )


def open_notebook(page: Any, lab: LabServer, path: str, *, timeout: float = 90) -> None:
    """Open ``path`` (relative to the root) in JupyterLab and wait for an idle kernel."""
    page.goto(lab.lab_url(path), timeout=timeout * 1000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout * 1000)
    wait_kernel_idle(page, timeout=timeout)


def run_all_cells(page: Any, *, timeout: float = 120) -> None:
    """Run every cell (Run → Run All Cells) and wait until they have all executed."""
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click()
    page.evaluate(
        "() => window.jupyterapp ? window.jupyterapp.commands.execute('notebook:run-all-cells')"
        " : null"
    )
    if not page.evaluate("() => !!window.jupyterapp"):
        page.keyboard.press("Escape")
        page.keyboard.press("Control+a")  # select all cells in command mode
        page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll(
                '.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=timeout * 1000,
    )
    wait_kernel_idle(page, timeout=timeout)
