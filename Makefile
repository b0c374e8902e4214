# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install requirements.txt on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DATA := data/demo

.PHONY: demo test install clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

$(DEMO_DATA)/val_pairs.txt: | $(STAMP)
	$(PY) -m helpers demo-data $(DEMO_DATA) --overwrite

# The main job on the built-in demo faces.
demo: $(STAMP) $(DEMO_DATA)/val_pairs.txt
	$(PY) -m helpers train --config configs/demo.yaml --set data.root=$(DEMO_DATA) --set run.out_dir=runs --resume auto

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf runs/demo $(DEMO_DATA)
