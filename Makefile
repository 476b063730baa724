VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test backtest lint bench

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)

## run: the main job on its offline default (paper node on the replay feed)
run: $(VENV)/.installed
	$(PY) -m hmm_strategy.live $(ARGS)

## test: the whole test suite (what CI runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

## backtest: a real backtest on ../shared/data (BTCUSDT 15m) with its report
backtest: $(VENV)/.installed
	$(PY) -m backtests.run --config configs/node.yaml $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) -m bench $(ARGS)
