# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install requirements.txt on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := HW2P2_Starter_Notebook.ipynb HW2P2_Checkpoint_Notebook.ipynb

.PHONY: demo test install clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# The main job: the starter notebook, top to bottom, on the built-in demo faces (written to data/demo).
# Leaves the executed notebook, checkpoints, metrics, submission.csv and plots/ in runs/demo/.
demo: $(STAMP)
	mkdir -p runs/demo
	$(PY) -m papermill HW2P2_Starter_Notebook.ipynb runs/demo/HW2P2_Starter_Notebook.ipynb \
		-p run_name demo -p epochs 15 --cwd .

# Unit and integration tests, then both notebooks executed top to bottom (nbval).
test: $(STAMP)
	$(PY) -m pytest -q tests --nbval-lax $(NOTEBOOKS)

clean:
	rm -rf runs/demo runs/starter runs/checkpoint data/demo data/demo.test_labels.txt
