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
