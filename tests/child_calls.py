"""What the children of ``test_children.py`` run: plain openai SDK code, nothing of llmspend.

Kept apart from the test module so that a spawned child imports only this and openai.
"""

from __future__ import annotations

from typing import Any

SMALL = 16  # max_tokens of a call whose worst case fits the tests' budget
HUGE = 100_000  # max_tokens of one whose worst case breaks it


def two_calls(base_url: str, sizes: tuple[int, ...] = (SMALL, HUGE)) -> list[str]:
    """A call that fits the budget, then one that breaks it (or calls of ``sizes``
    max_tokens): each call's outcome, as ``"ok"`` or the class name of the exception it
    raised."""
    import openai

    client = openai.OpenAI(api_key="x", base_url=base_url, max_retries=0)
    outcomes = []
    for max_tokens in sizes:
        try:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hello from a child"}],
                max_tokens=max_tokens,
            )
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def send_two_calls(base_url: str, conn: Any, sizes: tuple[int, ...] = (SMALL, HUGE)) -> None:
    """:func:`two_calls` as a ``multiprocessing.Process`` target: the outcomes go back
    through ``conn``."""
    conn.send(two_calls(base_url, sizes))
    conn.close()


def http_calls(openai_base_url: str, gemini_base_url: str) -> list[str]:
    """A Gemini request over plain httpx (as litellm sends one: no SDK tap sees it) and an
    openai SDK call: each call's outcome, as in :func:`two_calls`."""
    import httpx

    outcomes = []
    try:
        httpx.post(
            f"{gemini_base_url}/models/gemini-2.0-flash:generateContent",
            json={"contents": [{"parts": [{"text": "hello from a child"}]}]},
            headers={"x-goog-api-key": "k"},
        ).raise_for_status()
        outcomes.append("ok")
    except Exception as exc:
        outcomes.append(type(exc).__name__)
    return outcomes + two_calls(openai_base_url, (SMALL,))


def send_http_calls(openai_base_url: str, gemini_base_url: str, conn: Any) -> None:
    """:func:`http_calls` as a ``multiprocessing.Process`` target."""
    conn.send(http_calls(openai_base_url, gemini_base_url))
    conn.close()


def huge_call(base_url: str) -> None:
    """One call that breaks the budget, its ``BudgetExceeded`` left to propagate (to the
    pool, which pickles it back to the parent)."""
    import openai

    client = openai.OpenAI(api_key="x", base_url=base_url, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello from a child"}],
        max_tokens=HUGE,
    )
