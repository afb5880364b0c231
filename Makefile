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
MATHJAX_JS := /usr/share/javascript/mathjax/MathJax.js
CHECK_SCALE ?= smoke
# apt-get install when root on Debian, else say what to install: $(call apt,PACKAGES,TEST-COMMAND)
apt = @$(2) || { if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(1) through apt"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; }; \
	  else echo "install $(1) (apt-get install $(1))"; exit 1; fi; }
export OMP_NUM_THREADS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install data mathjax chromium book test pytest nbval book-smoke check-links check-book pdf benchmarks clean help

help:
	@echo "make book   — install, fetch data, run the notebooks (SCALE=smoke|cpu|gpu), build _build/html"
	@echo "make test   — install, fetch data, pytest + nbval (smoke) + book build (smoke)"
	@echo "make pdf    — the book as PDF through xelatex (installs TeX via apt when missing): _build/latex/thesis.pdf"
	@echo "make check-book — build the HTML (SCALE, default smoke) and check it in headless Chromium: _build/check"
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

# MathJax 2 served from the build (formulas render offline): Debian libjs-mathjax, copied by book/_ext/thesis_document.py.
mathjax:
	$(call apt,libjs-mathjax,test -f $(MATHJAX_JS))

chromium:
	$(call apt,chromium,command -v chromium >/dev/null 2>&1)

book: install data mathjax
	$(PY) -m thesislib.reproduce $(if $(SCALE),--scale $(SCALE),)

book-smoke: install data mathjax
	$(PY) -m thesislib.reproduce --scale smoke

# Internal links, images, error boxes and interface strings of the built HTML (fast, no browser).
check-links:
	$(PY) book/_ext/bookcheck.py --static --html _build/html

# The reader's check: front page, section 2.2 and a notebook in headless Chromium, offline; screenshots in _build/check.
check-book: install data mathjax chromium
	$(PY) -m thesislib.reproduce --scale $(or $(SCALE),$(CHECK_SCALE))
	$(PY) book/_ext/bookcheck.py --html _build/html --out _build/check

pytest: install data
	THESISLIB_SCALE=smoke $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -q

test: book-smoke check-links pytest

pdf: install data
	@command -v xelatex >/dev/null 2>&1 && command -v latexmk >/dev/null 2>&1 || \
	  { if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	      apt-get update -qq && apt-get install -y -qq $(TEX_PACKAGES); \
	    else echo "install xelatex and latexmk: apt-get install $(TEX_PACKAGES)"; exit 1; fi; }
	$(PY) -m thesislib.reproduce $(if $(SCALE),--scale $(SCALE),) --builder pdflatex
	@log=_build/latex/thesis.log; \
	  grep -q "Output written on thesis.pdf" $$log || { echo "make pdf: xelatex wrote no thesis.pdf, see $$log"; exit 1; }; \
	  if grep -E "There were undefined references|Citation .* undefined|Reference .* undefined" $$log; then \
	    echo "make pdf: undefined references (they print as ?? in the PDF), see $$log"; exit 1; fi; \
	  grep -o "Output written on thesis.pdf ([0-9]* pages*)" $$log

benchmarks: install
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf _build book/experiments
