# thesislib — two commands do all set-up on a fresh machine:
#   make book   install, fetch data, run every notebook, build the HTML book (_build/html)
#   make test   install, fetch data, pytest + nbval over every notebook at smoke scale + book build at smoke
# Both create .venv when it is missing and install into it.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?=
INSTALLED := $(VENV)/.installed
FASHION_SYSTEM := /usr/share/datasets/fashion-mnist
TEX_PACKAGES := texlive-xetex texlive-latex-extra texlive-lang-cyrillic latexmk fonts-freefont-otf texlive-fonts-recommended
export OMP_NUM_THREADS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install data book test pytest nbval book-smoke pdf benchmarks clean help

help:
	@echo "make book   — install, fetch data, run the notebooks (SCALE=smoke|cpu|gpu), build _build/html"
	@echo "make test   — install, fetch data, pytest + nbval (smoke) + book build (smoke)"
	@echo "make pdf    — the book as PDF through xelatex (installs TeX via apt when missing)"
	@echo "make benchmarks — run benchmarks/*.py and print their figures"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (thesislib)" >/dev/null
	@touch $@

# Fashion-MNIST: data/fashion-mnist, else the Debian package, else thesislib downloads it (torchvision).
data:
	@if ls data/fashion-mnist/*idx3-ubyte* >/dev/null 2>&1 || ls $(FASHION_SYSTEM)/*idx3-ubyte* >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Fashion-MNIST: installing the Debian package dataset-fashion-mnist"; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
	  echo "Fashion-MNIST: apt failed; thesislib will try a download"; \
	else \
	  echo "Fashion-MNIST: not found locally; thesislib will try a download (see data/README.md)"; \
	fi

book: install data
	$(PY) -m thesislib.reproduce $(if $(SCALE),--scale $(SCALE),)

book-smoke: install data
	$(PY) -m thesislib.reproduce --scale smoke

pytest: install data
	THESISLIB_SCALE=smoke $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -q

test: book-smoke pytest

pdf: install data
	@command -v xelatex >/dev/null 2>&1 && command -v latexmk >/dev/null 2>&1 || \
	  { if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	      apt-get update -qq && apt-get install -y -qq $(TEX_PACKAGES); \
	    else echo "install xelatex and latexmk: apt-get install $(TEX_PACKAGES)"; exit 1; fi; }
	$(PY) -m thesislib.reproduce $(if $(SCALE),--scale $(SCALE),) --builder pdflatex

benchmarks: install
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf _build book/experiments
