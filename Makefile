# lsf_ros: two commands on a fresh machine.
#   make demo   installs everything and animates the bundled clip with the embedded default model
#   make test   installs everything and runs the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lsf-setup-stamp
OUT ?= demo_out

.PHONY: setup demo test test-slow lint bench mutate clean
setup: $(STAMP)

$(STAMP): scripts/setup.sh setup.py
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/lsf-ros demo -o $(OUT)

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest --run-slow

lint: setup
	$(VENV)/bin/ruff check .

# mutation testing of the core packages (developer tool, not CI; scores in docs/testing.md): GROUPS="audio retarget"
mutate: setup
	$(PY) scripts/mutate.py $(GROUPS)

bench: setup
	$(VENV)/bin/lsf bench --stream --preset realtime --json bench_realtime_stream.json

clean:
	rm -rf $(VENV) build install log $(OUT) *.egg-info mutation
