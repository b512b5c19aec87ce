"""Optional extras say so: each feature behind an extra, run where the extra's modules are
missing, fails with one MissingExtra line naming the extra (the CLI: exit 1, no traceback).

A meta-path finder put first in a ``-c`` prelude raises ``ModuleNotFoundError`` for the
extra's packages, as when they are not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmspend.errors import ConfigError, LLMSpendError, MissingExtra
from llmspend.extras import missing_modules, require_extra

PRELUDE = """
import sys

class _NotInstalled:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled({names!r}))
"""
NOTEBOOK = ("altair", "ipywidgets", "papermill", "nbconvert", "nbformat", "vl_convert")


def _run(tmp_path: Path, missing: tuple[str, ...], body: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE.format(names=set(missing)) + textwrap.dedent(body)
    env = {"PATH": "/usr/bin:/bin", "LLMSPEND_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip


def _cli(tmp_path: Path, missing: tuple[str, ...], *argv: str) -> subprocess.CompletedProcess[str]:
    body = f"from llmspend.cli import main\nsys.exit(main({list(argv)!r}))\n"
    return _run(tmp_path, missing, body)


def _one_line(out: subprocess.CompletedProcess[str], message: str) -> None:
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [message]


CLI = {
    "report": (
        NOTEBOOK,
        ("report",),
        "llmspend report needs the notebook extra: pip install 'llmspend[notebook]'",
    ),
    "report_without_altair": (  # the case: only the charting library is missing
        ("altair",),
        ("report",),
        "llmspend report needs the notebook extra: pip install 'llmspend[notebook]'",
    ),
    "export_parquet": (
        ("pyarrow",),
        ("export", "out.parquet"),
        "llmspend export to Parquet needs the parquet extra: pip install 'llmspend[parquet]'",
    ),
    "postgres_url": (
        ("psycopg",),
        ("db", "upgrade", "--database-url", "postgresql://nobody@127.0.0.1:9/none"),
        "a PostgreSQL store needs the postgres extra: pip install 'llmspend[postgres]'",
    ),
    "gateway": (
        ("starlette", "uvicorn"),
        ("gateway", "serve"),
        "llmspend gateway needs the gateway extra: pip install 'llmspend[gateway]'",
    ),
}


@pytest.mark.parametrize("case", sorted(CLI))
def test_a_cli_command_without_its_extra_says_so_in_one_line(tmp_path: Path, case: str) -> None:
    missing, argv, message = CLI[case]
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    if "--database-url" not in argv:
        argv = ("--database-url", db, *argv)
    _one_line(_cli(tmp_path, missing, *argv), f"llmspend: error: {message}")
    assert not (tmp_path / "out.parquet").exists()


API = {
    "dashboard": (
        NOTEBOOK,
        "llmspend.dashboard()",
        "llmspend.dashboard() needs the notebook extra: pip install 'llmspend[notebook]'",
    ),
    "spend_report_chart": (
        ("altair",),
        "__import__('llmspend.notebook.commands').notebook.commands.spend_report()",
        "%spend report's chart needs the notebook extra: pip install 'llmspend[notebook]'",
    ),
    "run_report": (
        ("papermill",),
        "__import__('llmspend.report').report.run_report()",
        "run_report() needs the notebook extra: pip install 'llmspend[notebook]'",
    ),
    "otel": (
        ("opentelemetry",),
        "llmspend.install(otel=True)",
        "OpenTelemetry export needs the otel extra: pip install 'llmspend[otel]'",
    ),
}


@pytest.mark.parametrize("case", sorted(API))
def test_a_python_entry_point_without_its_extra_raises_missing_extra(
    tmp_path: Path, case: str
) -> None:
    missing, call, message = API[case]
    body = f"""
    import llmspend
    try:
        {call}
    except llmspend.MissingExtra as exc:
        print(f"{{exc.extra}}|{{exc}}", file=sys.stderr)
        sys.exit(1)
    """
    extra = message.split(" extra:")[0].rsplit(" ", 1)[1]
    _one_line(_run(tmp_path, missing, body), f"{extra}|{message}")


def test_require_extra_names_what_is_missing() -> None:
    assert missing_modules(["json", "no_such_module_xyz", "no_such_pkg_xyz.sub"]) == (
        "no_such_module_xyz",
        "no_such_pkg_xyz.sub",
    )
    require_extra("anything", "notebook", ["json"])  # present: nothing happens
    with pytest.raises(MissingExtra) as info:
        require_extra("llmspend report", "notebook", ["json", "no_such_module_xyz"])
    exc = info.value
    assert isinstance(exc, ConfigError) and isinstance(exc, LLMSpendError)
    assert str(exc) == "llmspend report needs the notebook extra: pip install 'llmspend[notebook]'"
    assert (exc.feature, exc.extra, exc.modules) == ("llmspend report", "notebook",
                                                     ("no_such_module_xyz",))  # fmt: skip
    import pickle

    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) and again.modules == exc.modules
