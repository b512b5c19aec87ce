"""Running the report notebook: papermill executes it, nbconvert renders it to HTML.

The executed notebook becomes one self-contained HTML file (code hidden, charts as inline
SVG, styles inlined, no script or font loaded from anywhere: the page works offline and in
mail). papermill, nbconvert, nbformat and jupyter_client are imported when used (the
``notebook`` extra).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ReportError

__all__ = [
    "DEFAULT_NOTEBOOK",
    "REMOVED_TAGS",
    "execute_notebook",
    "kernel_arguments",
    "notebook_path",
    "to_html",
]


#: Where the report notebook is looked for: inside the package (wheels), then the checkout.
_PACKAGE = Path(__file__).resolve().parent.parent  # llmspend/
_CANDIDATES = (
    _PACKAGE / "notebooks" / "spend_report.ipynb",
    _PACKAGE.parent / "notebooks" / "spend_report.ipynb",
)
DEFAULT_NOTEBOOK = _CANDIDATES[-1]


def notebook_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The report notebook to run: ``path``, else the one shipped with llmspend."""
    if path is not None:
        found = Path(path)
        if not found.is_file():
            raise ConfigError(f"report notebook not found: {str(found)!r}")
        return found
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "the spend report notebook is not installed with this copy of llmspend; pass "
        "--notebook PATH (notebooks/spend_report.ipynb in the llmspend sources)"
    )


@contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Set environment variables for the kernel papermill starts (it inherits ours)."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_line(text: Any, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def kernel_arguments(kernel_name: str) -> list[str]:
    """Extra command-line arguments for the kernel; checks that it exists.

    An ipykernel kernel is told to log only critical problems: its start-up warning about
    TCP without encryption (it listens on 127.0.0.1) and the interrupt papermill sends
    after a failing cell would otherwise land on stderr of every scheduled run, where cron
    mails them. Failures still surface, as papermill's errors.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ReportError(
            f"no Jupyter kernel named {kernel_name!r}; install one with "
            "'python -m ipykernel install --user' (or pip install ipykernel)"
        ) from None
    if any("ipykernel" in part for part in spec.argv):
        return ["--IPKernelApp.log_level=CRITICAL"]
    return []


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    database_url: str | None,
    gateway_url: str | None = None,
    kernel_name: str = "python3",
    progress_bar: bool = False,
    timeout: int | None = 600,
) -> Path:
    """Execute ``notebook`` with papermill into ``output``.

    The store's URL goes to the kernel through ``LLMSPEND_DATABASE_URL`` rather than as a
    parameter, so a password in it is not written into the executed notebook; in team mode
    (``database_url=None``, ``gateway_url`` given) the kernel gets the gateway's URL and no
    database URL at all (its gateway credential comes from the environment). A failing
    cell raises :class:`ReportError` naming the cell and its error in one line.
    """
    try:
        import papermill as pm
        from nbformat import ValidationError as NotebookInvalid
        from papermill.exceptions import PapermillException, PapermillExecutionError
    except ImportError as exc:  # pragma: no cover - an install without the extra
        raise ReportError(
            f"llmspend report needs papermill and nbconvert ({exc.name} is missing): "
            "pip install 'llmspend[notebook]'"
        ) from None
    extra = kernel_arguments(kernel_name)
    try:
        with _environ(LLMSPEND_DATABASE_URL=database_url, LLMSPEND_GATEWAY_URL=gateway_url):
            pm.execute_notebook(
                str(notebook),
                str(output),
                parameters=dict(parameters),
                kernel_name=kernel_name,
                progress_bar=progress_bar,
                execution_timeout=timeout,
                extra_arguments=extra,
            )
    except PapermillExecutionError as exc:
        source = next((ln for ln in str(exc.source).splitlines() if ln.strip()), "")
        raise ReportError(
            f"the report notebook failed in cell {exc.exec_count} ({_one_line(source, 60)}): "
            f"{exc.ename}: {_one_line(exc.evalue)}"
        ) from None
    except TimeoutError as exc:
        raise ReportError(f"the report notebook timed out: {_one_line(exc)}") from None
    except (RuntimeError, PapermillException, NotebookInvalid, ValueError, OSError) as exc:
        # the kernel died or did not start, or the file is not a runnable notebook
        raise ReportError(
            f"the report notebook {str(notebook)!r} could not run: {_one_line(exc)}"
        ) from None
    return output


_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{#- llmspend report: the lab template with nothing loaded from the network -#}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}
<style type="text/css">
body.jp-Notebook { max-width: 1000px; margin: 0 auto; padding: 16px 24px; }
.jp-Cell { padding: 2px 0; }
.jp-OutputArea-output table { font-size: 13px; }
h1.llmspend-title { margin: 8px 0 4px; font-size: 26px; }
p.llmspend-sub { margin: 0 0 12px; color: #555; line-height: 1.5; }
.llmspend-kpis { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0; }
.llmspend-kpi { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.llmspend-kpi-label { color: #666; font-size: 12px; }
.llmspend-kpi-value { font-size: 22px; font-weight: 600; }
.llmspend-kpi-detail { color: #777; font-size: 12px; }
.llmspend-chart svg { max-width: 100%; height: auto; }
</style>
{%- endblock extra_css -%}
"""
#: Cells with these tags are left out of the HTML page.
REMOVED_TAGS: tuple[str, ...] = ("hide-in-report", "parameters", "injected-parameters")
_EXTERNAL_SCRIPT = re.compile(r"<script[^>]+src\s*=\s*[\"']?\s*(?:https?:)?//", re.I)


def to_html(executed: Path, output: Path, *, title: str | None = None) -> Path:
    """Render an executed notebook to one self-contained HTML file at ``output``.

    Code cells' inputs and prompts are left out; nothing is loaded from the network
    (no require.js, MathJax, Mermaid or widget scripts; styles inlined). Written to a
    temporary file first and moved into place, so a failure leaves no partial page.
    """
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata.pop("widgets", None)  # live widgets would need scripts from a CDN
    for cell in nb.cells:  # warnings on stderr are for the notebook, not for its readers
        if cell.cell_type == "code":
            cell.outputs = [
                o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")
            ]
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"llmspend_report.html.j2": _TEMPLATE})],
        template_file="llmspend_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags=set(REMOVED_TAGS)), enabled=True
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title or "report"}})
    if _EXTERNAL_SCRIPT.search(body):  # pragma: no cover - a template change upstream
        raise ReportError("the rendered report would load a script from the network")
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # created with the umask
    try:
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"cannot write {str(output)!r}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output
