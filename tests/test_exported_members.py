"""The public surface: ``__all__`` lists every public name, and each one exists."""

from __future__ import annotations

import subprocess
import sys

import llmspend


def test_all_is_complete_and_resolvable() -> None:
    import types

    public = {
        name
        for name, value in vars(llmspend).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
    }
    assert public <= set(llmspend.__all__), public - set(llmspend.__all__)
    for name in llmspend.__all__:
        assert getattr(llmspend, name) is not None, name


def test_contract_names_are_exported() -> None:
    for name in ("records", "ingest", "price", "LLMSpendError", "BudgetExceeded"):
        assert name in llmspend.__all__


def test_errors_share_one_root() -> None:
    from llmspend import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, (llmspend.LLMSpendError, errors.LLMSpendWarning))
    from llmspend.pricing import UnknownModelWarning

    assert issubclass(UnknownModelWarning, errors.LLMSpendWarning)
    assert issubclass(llmspend.BudgetExceeded, llmspend.LLMSpendError)


def test_import_is_light() -> None:
    heavy = "('pandas', 'sqlalchemy', 'openai', 'genai_prices', 'alembic')"
    code = f"import sys, llmspend; print(','.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_plugin_api_is_exported() -> None:
    from llmspend import call, pipeline, plugins

    homes = {
        "Call": call,
        "Usage": call,
        "begin_call": pipeline,
        "Patch": plugins,
        "ProviderPlugin": plugins,
        "register_provider": plugins,
    }
    for name, module in homes.items():
        assert name in llmspend.__all__, name
        assert getattr(llmspend, name) is getattr(module, name), name


def test_every_exception_lives_in_the_errors_module() -> None:
    """No module but ``errors`` defines an exception or warning class."""
    import ast
    from pathlib import Path

    package = Path(llmspend.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        if path.name == "errors.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                if any(b.endswith(("Error", "Exception", "Warning")) for b in bases):
                    found.append(f"{path.relative_to(package)}:{node.name}")
    assert found == []


def test_the_tree_drawn_in_the_errors_docstring_is_true() -> None:
    """Each class drawn in ``errors``' docstring derives from the one drawn above it, and
    every class the module exports is drawn."""
    import re

    from llmspend import errors

    doc = errors.__doc__ or ""
    drawn: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        m = re.match(r"^(\s*)((?:[│ ]{4})*)(?:[├└]── )?([A-Z][A-Za-z]+)\b", line)
        if not m or not hasattr(errors, m.group(3)):
            continue
        name = m.group(3)
        depth = len(m.group(2)) // 4 + (1 if "── " in line else 0)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        drawn[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    assert set(drawn) == set(errors.__all__)
    for name, parent in drawn.items():
        cls = getattr(errors, name)
        if parent is None:
            assert cls.__bases__[0] in (Exception, UserWarning), name
        else:
            assert getattr(errors, parent) in cls.__bases__, (name, parent)


def test_price_is_importable_and_is_what_price_returns() -> None:
    price = llmspend.price("gpt-4o-mini", provider="openai", input_tokens=10)
    assert isinstance(price, llmspend.Price)
    assert "Price" in llmspend.__all__
