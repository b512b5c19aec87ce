"""The llmspend gateway: a reverse proxy that holds the provider keys and enforces budgets.

Users hold gateway keys (:mod:`llmspend.gateway.keys`), never provider keys; the gateway
takes their identity from the key, runs the same pipeline as the kernel (the dialects,
budgets, pricing, the record transaction, alerts) and forwards the request to an upstream
named in its configuration (:mod:`llmspend.gateway.config`). Started by
``llmspend gateway serve``; see ``docs/team.md``. Needs the ``gateway`` extra
(starlette, uvicorn, aiohttp).
"""
