"""The on-disk table of genai-prices' data (llmspend.pricing.table): the same prices as the
full path for every model, and a cache that is never wrong (stale, corrupt, unwritable)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmspend.pricing import PriceBook, snapshot, table
from llmspend.pricing.table import Table

AT = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
EPOCH = AT.timestamp()
USAGES = [(1, 0, 0, 1, 0), (1000, 200, 100, 500, 100), (250_001, 50_000, 0, 4000, 1500),
          (1_200_000, 0, 10, 3, 0)]  # fmt: skip
TIERS = [None, "batch", "flex", "priority", "default"]


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _use(monkeypatch: pytest.MonkeyPatch, data: Table) -> None:
    monkeypatch.setattr(snapshot, "_genai_state", data)


@pytest.fixture(scope="module")
def full() -> Table:
    return table.build()


@pytest.fixture
def cached(cache_home: Path, full: Table) -> Table:
    key = table.data_key()
    assert key is not None
    table._save(full, key, table.cache_path())
    loaded = table.load()
    assert not any(p._models is not None for p in loaded.providers)  # decoded lazily
    return loaded


def _moments(data: Table) -> Iterator[float]:
    """Now, and each side of every start date and time-of-day window in the data."""
    yield EPOCH
    seen: set[float] = set()
    for prov in data.providers:
        for model in prov.models:
            for price in (*model.prices, *(v.price for v in model.variants)):
                if price.start is not None:
                    at = dt.datetime(price.start.year, price.start.month, price.start.day,
                                     tzinfo=dt.UTC).timestamp()  # fmt: skip
                    seen.update((at - 1, at))
                if price.tod is not None:
                    seen.update(EPOCH - EPOCH % 86400 + s for s in (*price.tod, price.tod[0] - 1))
    yield from sorted(seen)


def _prices(book: PriceBook, data: Table, moments: list[float]) -> list[object]:
    out: list[object] = []
    for prov in data.providers:
        for model in prov.models:
            for provider in (prov.id, None):
                for at in moments:
                    out.extend(book.price_nanos(provider, model.id, *u, at) for u in USAGES)
                for tier in TIERS:
                    out.append(book.price_nanos(provider, model.id, *USAGES[2], EPOCH, tier=tier))
                out.append(book.quote(model.id, provider, *USAGES[2], AT).__reduce__())
                out.append(book.history(model.id, provider, at=AT))
    return out


def test_the_cached_table_equals_the_full_path(cached: Table, full: Table) -> None:
    assert cached == full
    assert list(cached.units) == list(full.units) and cached.units == full.units
    assert [p.id for p in cached.providers] == [p.id for p in full.providers]


@pytest.mark.filterwarnings("ignore::llmspend.pricing.UnknownModelWarning")
def test_every_model_prices_the_same_from_the_cache(
    cached: Table, full: Table, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every model of every provider, by provider and by name alone, over time windows,
    tiers (long context, service tiers) and with an override file: cache == full path."""
    every = list(_moments(full))
    moments = [*every[:: max(1, len(every) // 8)], EPOCH]
    prices = tmp_path / "prices.toml"
    prices.write_text(textwrap.dedent("""
        [[model]]
        match = "gpt-4o"
        provider = "openai"
        input_mtok = 1.25
        output_mtok = 5
        [[alias]]
        name = "my-model"
        model = "gemini-2.5-pro"
        [[discount]]
        provider = "anthropic"
        percent = 10
    """))  # fmt: skip
    answers = []
    for data in (full, cached):
        _use(monkeypatch, data)
        for path in (None, str(prices)):
            answers.append(_prices(PriceBook(path), full, moments))
    assert answers[0] == answers[2] and answers[1] == answers[3]
    assert answers[0] != answers[1]  # the override file changed something


def test_models_are_found_as_genai_prices_finds_them(cached: Table) -> None:
    """``find_model`` and the providers' match clauses answer as genai-prices' own."""
    from genai_prices.data import providers

    names = {m.id for p in providers for m in p.models}
    names |= {f"{n}-20250101" for n in list(names)[:200]} | {"gpt-4o-2024-08-06", "x", ""}
    for theirs, ours in zip(providers, cached.providers, strict=True):
        for name in sorted(names):
            want = theirs.find_model(name, all_providers=providers)
            got = ours.find_model(name, all_providers=cached.providers)
            assert (want and want.id) == (got and got.id), (theirs.id, name)
        for clause, mine in ((theirs.model_match, ours.model_match),
                             (theirs.provider_match, ours.provider_match)):  # fmt: skip
            if clause is not None:
                assert mine is not None
                for name in (theirs.id, *sorted(names)[:300]):
                    assert clause.is_match(name) == mine.is_match(name), (theirs.id, name)


def test_a_corrupt_or_stale_cache_is_rebuilt(cache_home: Path, full: Table) -> None:
    path = Path(table.cache_path())
    assert table.load() == full and path.exists()  # a miss: built and saved
    good = path.read_text(encoding="utf-8")
    for bad in ("", "{", good[: len(good) // 2], good.replace('"key":"', '"key":"x', 1),
                '{"key": 1}\n', "\x00" * 10):  # fmt: skip
        path.write_text(bad, encoding="utf-8")
        assert table.load() == full
        assert path.read_text(encoding="utf-8") == good  # rewritten
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_an_unwritable_cache_directory_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full: Table
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert table.load() == full


def _run(code: str, env: dict[str, str], path: str | None = None) -> str:
    env = {**os.environ, **env}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, cwd=Path(__file__).parents[1])  # fmt: skip
    return out.stdout.strip()


FIRST = """
import sys, llmspend
p = llmspend.price("gpt-4o", provider="openai", input_tokens=1_000_000, output_tokens=0)
print(p.total_usd, "genai_prices" in sys.modules, "pydantic" in sys.modules)
"""


def test_a_fresh_process_prices_from_the_cache_without_genai_prices(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "c"), "LLMSPEND_PRICES": ""}
    assert _run(FIRST, env) == "2.5 True True"  # a miss: the full path, then saved
    assert _run(FIRST, env) == "2.5 False False"  # a hit: neither imported


def test_an_update_of_genai_prices_is_seen(tmp_path: Path) -> None:
    """A genai-prices with other data (here a copy with gpt-4o's input price changed) is
    priced from its own data, not from the table cached for the one installed before."""
    import genai_prices.data as data

    env = {"XDG_CACHE_HOME": str(tmp_path / "c"), "LLMSPEND_PRICES": ""}
    assert _run(FIRST, env) == "2.5 True True"
    copy = tmp_path / "site" / "genai_prices"
    shutil.copytree(Path(data.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    text = (copy / "data.py").read_text(encoding="utf-8")
    start = text.index("id='gpt-4o',", text.index("        id='openai',"))
    at = text.index("input_mtok=Decimal('2.5')", start)
    (copy / "data.py").write_text(text[:at] + "input_mtok=Decimal('3.5')" +
                                  text[at + len("input_mtok=Decimal('2.5')"):])  # fmt: skip
    site = str(tmp_path / "site")
    assert _run(FIRST, env, site) == "3.5 True True"
    assert _run(FIRST, env, site) == "3.5 False False"
    assert _run(FIRST, env) == "2.5 True True"  # and back


def test_an_update_of_the_override_file_is_seen(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    env = {"XDG_CACHE_HOME": str(tmp_path / "c"), "LLMSPEND_PRICES": str(prices)}
    entry = '[[model]]\nmatch = "gpt-4o"\nprovider = "openai"\ninput_mtok = {}\noutput_mtok = 1\n'
    prices.write_text(entry.format(7))
    assert _run(FIRST, env) == "7 True True"
    assert _run(FIRST, env) == "7 False False"
    prices.write_text(entry.format(8.25))
    assert _run(FIRST, env) == "8.25 False False"


def _damage(path: Path, provider: str, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in ``provider``'s line, leaving the lines above as they were."""
    lines = path.read_text(encoding="utf-8").split("\n")
    ids = [p.id for p in table.load().providers]
    at = len(lines) - 1 - len(ids) + ids.index(provider)  # the provider lines end the file
    assert old in lines[at]
    lines[at] = lines[at].replace(old, new, 1)
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"gpt-4o",', '"gpt-4o" '),  # no longer JSON: decoding the provider would raise
        ('"input_mtok":"2.5"', '"input_mtok":"9.5"'),  # still JSON, a wrong price
    ],
)
def test_a_cache_damaged_below_its_header_is_rebuilt(
    cache_home: Path, full: Table, old: str, new: str
) -> None:
    """Damage to a provider's line (the lines above intact) is found when the table is read:
    the table is rebuilt and rewritten, never a JSONDecodeError (or a wrong price) at the
    first price of that provider in every later process."""
    path = Path(table.cache_path())
    assert table.load() == full
    good = path.read_text(encoding="utf-8")
    _damage(path, "openai", old, new)
    assert table.load().by_id["openai"] == full.by_id["openai"]  # decoded: every price
    assert path.read_text(encoding="utf-8") == good  # rewritten
