# make setup   : .venv with pinned torch and ptqlib (editable) plus the report and test tools
# make report  : execute the section notebooks into book/, REPORT_JOBS at a time, and build the HTML book (_build/html)
# make test    : the test suite, on TEST_WORKERS processes (pytest-xdist; default: one a core)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_WORKERS ?= auto
REPORT_JOBS  ?= 2

.PHONY: setup report book test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet -e '.[report,dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

report: setup
	$(BIN)/python -m ptqlib.app.report --jobs $(REPORT_JOBS) --build

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

bench: setup
	$(BIN)/ptq bench --model resnet20 --data cifar10-jpeg --json

clean:
	rm -rf _build
