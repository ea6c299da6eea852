# Two entry points (see README): `make demo` and `make test`.
# torch is installed pinned *before* the package so pip never resolves an
# unpinned (multi-GB CUDA) build; PyPI's Linux torch wheels are CUDA builds, so
# PyTorch's CPU index is searched too (its 2.13.0+cpu wins over PyPI's 2.13.0; an
# unreachable index costs a few retries, a local wheel still installs). GPU users:
# install your torch first and run `make demo TORCH_SPEC=` (empty) to keep it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.moviessl-installed

.PHONY: demo demo-full test install clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q --retries 1 --timeout 20 \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# `make demo`: the quick profile (minutes on 2 cores, one pretraining run per backbone / TxE).
# `make demo-full`: the comparison protocol (3 pretraining runs x 4 fine-tuning seeds per row,
# hours on 2 cores; resumable: rerun it after an interruption). docs/design.md, "Demo profiles".
demo: $(STAMP)
	$(BIN)/moviessl demo --profile quick --out runs/demo

demo-full: $(STAMP)
	$(BIN)/moviessl demo --profile full --out runs/demo_full

test: $(STAMP)
	$(BIN)/ruff check --no-cache src tests benchmarks
	$(BIN)/ruff format --check --no-cache -q src tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
