# qtutor: `make lab` to learn, `make test` to check. Every target sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Jupyter refuses to run as root unless told; containers and CI machines often are root.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: lab test demo student notebooks clean

# Create the virtual environment and install qtutor with its dev extra (again whenever pyproject.toml changes).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lab: $(STAMP)  ## open the course in JupyterLab
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ROOT)

test: $(STAMP)  ## unit tests, then every notebook under nbval (strict: outputs must match)
	$(PY) -m pytest --nbval --doctest-modules tests qtutor notebooks

demo: $(STAMP)  ## the command line end to end on the bundled data
	$(PY) -m qtutor
	@echo "make demo will train, quantize, evaluate and predict on the bundled data once the DenseNet tasks land."

student: $(STAMP)  ## student copies of the notebooks, solutions removed, in build/student/
	$(PY) -m qtutor.student notebooks build/student

notebooks: $(STAMP)  ## re-execute every notebook in place, one at a time, top to bottom (for contributors)
	for notebook in notebooks/*.ipynb; do \
		echo "executing $$notebook"; \
		$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --log-level=WARN "$$notebook" || exit 1; \
	done

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
