# Two commands do everything on a fresh Debian/Ubuntu machine with Python 3.11+:
#   make run    set up .venv and open the window
#   make test   set up .venv and run every check CI runs
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hubside-installed

# llama-cpp-python compiles llama.cpp for this CPU. Its AMX kernels crash where the CPU reports AMX but
# the system has not enabled it (seen in VMs), and desktop CPUs have no AMX: build without it.
ifeq ($(shell uname -m),x86_64)
LLAMA_FLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

.PHONY: run demo test lint bench package install-desktop sysdeps sysdeps-gui clean

run: sysdeps-gui $(STAMP)
	$(BIN)/hubside

# The whole flow offline: the Hub stand-in with real small models, and the app pointed at it.
demo: sysdeps-gui $(STAMP)
	$(BIN)/python -m tests.hubstub.demo

test: sysdeps $(STAMP) lint
	QT_QPA_PLATFORM=$${QT_QPA_PLATFORM:-offscreen} $(BIN)/pytest

# llama-bench and llama-server (built once from the same llama-cpp-python source, cached) beside
# `hubside bench` and `hubside serve`.
bench: sysdeps $(STAMP)
	@sh packaging/sysdeps.sh bench
	LLAMA_FLAGS="$(LLAMA_FLAGS)" $(BIN)/python -m bench.run
	LLAMA_FLAGS="$(LLAMA_FLAGS)" $(BIN)/python -m bench.server
	QT_QPA_PLATFORM=$${QT_QPA_PLATFORM:-offscreen} $(BIN)/python -m bench.gui_heartbeat
	$(BIN)/python -m bench.downloads
	$(BIN)/python -m bench.compare
	$(BIN)/python -m bench.startup
	QT_QPA_PLATFORM=$${QT_QPA_PLATFORM:-offscreen} $(BIN)/python -m bench.chat_scale
	$(BIN)/python -m bench.chat_search
	QT_QPA_PLATFORM=$${QT_QPA_PLATFORM:-offscreen} $(BIN)/python -m bench.library_scale

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict app
	$(BIN)/lint-imports

# The app as a folder that runs without Python or a venv: dist/hubside/hubside. Then its self-test.
package: sysdeps $(STAMP)
	$(BIN)/python -m pip install --quiet "pyinstaller>=6.10,<7"
	mkdir -p build/package
	$(BIN)/python -c 'from pathlib import Path; from tests import models; from tests.tinymodel import make_tiny_model; \
		make_tiny_model(Path("build/package/selftest.gguf"), models.fetch(models.SMOLLM2))'
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/hubside.spec
	QT_QPA_PLATFORM=offscreen dist/hubside/hubside --self-test
	du -sh dist/hubside

# Menu entry, icons and hubside:// links for the current user (Linux).
install-desktop:
	sh packaging/install-desktop.sh

sysdeps:
	@sh packaging/sysdeps.sh core

sysdeps-gui:
	@sh packaging/sysdeps.sh gui

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Hubside needs Python 3.11 or newer (found $$($(PYTHON) --version))."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing Hubside; the first time builds llama.cpp from source (about 4 minutes)."
	CFLAGS="$(LLAMA_FLAGS)" CXXFLAGS="$(LLAMA_FLAGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
