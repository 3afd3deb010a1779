# qtutor: `make lab` to learn, `make test` to check. Every target sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Jupyter refuses to run as root unless told; containers and CI machines often are root.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: lab test lint e2e hub bench demo student assignments notebooks clean

# pytest plugins a stage does not use, left unloaded: nbval (the notebook stage's; it imports nbformat and
# jupyter_client) and anyio's cost each pytest process about 3 s of CPU, hypothesis's about 0.5 s (the unit tests use it).
UNIT_PLUGINS := -p no:nbval -p no:anyio
SERVER_PLUGINS := $(UNIT_PLUGINS) -p no:hypothesispytest

# Create the virtual environment and install qtutor with its dev and instructor extras (again whenever
# pyproject.toml changes): the tests run nbgrader and a JupyterHub.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,instructor]"
	touch $(STAMP)

lab: $(STAMP)  ## open the course in JupyterLab
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ROOT)

test: $(STAMP)  ## lint (seconds), unit tests (nbgrader too), every notebook under nbval (strict), the browser test, the JupyterHub test
	$(VENV)/bin/ruff check qtutor tests benchmarks tools
	$(VENV)/bin/ruff format --check qtutor tests benchmarks tools
	$(PY) -m pytest $(UNIT_PLUGINS) -n auto --dist loadfile --no-loadscope-reorder --doctest-modules -m "not e2e and not hub" tests qtutor
	$(PY) -m pytest --nbval notebooks
	$(PY) -m pytest $(SERVER_PLUGINS) -n 2 -m e2e tests/e2e
	$(PY) -m pytest $(SERVER_PLUGINS) -m hub tests/hub

lint: $(STAMP)  ## only the lint stage: ruff check and ruff format --check (pinned in pyproject.toml; [tool.ruff] there)
	$(VENV)/bin/ruff check qtutor tests benchmarks tools
	$(VENV)/bin/ruff format --check qtutor tests benchmarks tools

e2e: $(STAMP)  ## only the browser test: JupyterLab in headless Chromium (needs `apt-get install chromium`)
	$(PY) -m pytest $(SERVER_PLUGINS) -n 2 -m e2e tests/e2e

hub: $(STAMP)  ## only the JupyterHub test: two students on a local hub (needs `npm install -g configurable-http-proxy`)
	$(PY) -m pytest $(SERVER_PLUGINS) -m hub tests/hub

bench: $(STAMP)  ## every benchmark, one at a time (over an hour on 2 cores); tables in benchmarks/results/
	$(PY) benchmarks/primitives.py
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/ablations.py
	$(PY) benchmarks/course.py

# The bundled digits' statistics (data/digits/stats.json), classes, and the size the course model is trained at.
DEMO := build/demo
MEAN := (0.1315, 0.1315, 0.1315)
STD := (0.3088, 0.3088, 0.3088)
CLASSES := 10
SIZE := 64

demo: $(STAMP)  ## the command line end to end on the bundled data: train (copies the shipped model), quantize, evaluate, predict
	mkdir -p $(DEMO)
	$(VENV)/bin/qtutor --task train --dst_model $(DEMO)/densenet_digits.pth --classes_number $(CLASSES) --image_size $(SIZE)
	$(VENV)/bin/qtutor --task quantize --src_model $(DEMO)/densenet_digits.pth --dst_model $(DEMO)/densenet_digits_int8.pt \
		--classes_number $(CLASSES) --mean "$(MEAN)" --std "$(STD)" --dataset_path data/digits --image_size $(SIZE)
	$(VENV)/bin/qtutor --task evaluate --src_model $(DEMO)/densenet_digits.pth --dst_model $(DEMO)/densenet_digits_int8.pt \
		--classes_number $(CLASSES) --mean "$(MEAN)" --std "$(STD)" --dataset_path data/digits --image_size $(SIZE)
	$(VENV)/bin/qtutor --task predict --dst_model $(DEMO)/densenet_digits_int8.pt --labels_file data/digits/labels.txt \
		--images_path data/samples --mean "$(MEAN)" --std "$(STD)" --image_size $(SIZE)

student: $(STAMP)  ## student copies of the notebooks, solutions removed, in build/student/
	$(PY) -m qtutor.student notebooks build/student

# An instructor's nbgrader course folder (git-ignored; it will hold submissions and grades). make clean keeps it.
COURSE ?= course

assignments: $(STAMP)  ## nbgrader: every notebook tagged into $(COURSE)/source/ and released into $(COURSE)/release/
	$(PY) -m qtutor.assignments --course $(COURSE) notebooks
	cd $(COURSE) && PATH="$(abspath $(VENV))/bin:$$PATH" nbgrader generate_assignment "*" --force

notebooks: $(STAMP)  ## re-execute every notebook in place, one at a time, top to bottom (for contributors)
	for notebook in notebooks/*.ipynb; do \
		echo "executing $$notebook"; \
		$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --log-level=WARN "$$notebook" || exit 1; \
	done

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
