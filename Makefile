# Two commands for a fresh machine: `make demo` and `make test` (each sets itself up first).
PYTHON ?= python3
VENV ?= .venv
# A second environment for the `tfds build` CLI, which needs TensorFlow + Apache Beam; the
# package itself never imports TensorFlow.
TFDS_VENV ?= .venv-tfdscli
PY := $(VENV)/bin/python
# -qq: the machine-wide pip config names local indexes whose warnings would drown the log.
PIP := $(PY) -m pip install --disable-pip-version-check -qq
# jax2onnx declares orbax-checkpoint<0.11.37 (ours is 0.12) but never imports it: installed
# without its declared deps, next to the `export` extra (pyproject.toml) that holds the ones it uses.
JAX2ONNX := jax2onnx==0.17.1

.PHONY: demo serve-demo test bench install install-test install-export install-serve clean

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-export: pyproject.toml $(VENV)/.installed
	$(PIP) -e '.[export]'
	$(PIP) --no-deps '$(JAX2ONNX)'
	touch $@

# The search page (python -m tvilfm_jax.serve); the demo installs it so its output can be served.
$(VENV)/.installed-serve: pyproject.toml $(VENV)/.installed
	$(PIP) -e '.[serve]'
	touch $@

# The search page's browser test (tests/test_serve.py) drives Debian's chromium through
# Playwright (whose own browser download is not used); CI runs as root.
$(VENV)/.installed-browser: | $(PY)
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
	touch $@

# The tests include the ONNX export's (tests/test_export.py) and the search page's.
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-export $(VENV)/.installed-serve $(VENV)/.installed-browser
	$(PIP) -e '.[test]'
	touch $@

$(TFDS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TFDS_VENV)
	$(TFDS_VENV)/bin/python -m pip install --disable-pip-version-check -qq -e '.[tfds-cli]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test $(TFDS_VENV)/.installed
install-export: $(VENV)/.installed-export
install-serve: $(VENV)/.installed-serve

demo: install install-serve
	$(PY) -m tvilfm_jax.demo

# The search page on the demo's output (after `make demo`): the test identities' RGB images as the
# gallery, the captioned IR images as queries (README, "Use a trained model"), then the server on
# http://127.0.0.1:8000/. Extracts that already finished are reused.
DEMO_TREE := tfds_data/downloads/synthetic/sysu
DEMO_MODEL := runs/demo/tvilfm/models/last
DEMO_FEATURES := runs/demo/features
serve-demo: install-serve
	test -d $(DEMO_MODEL) || (echo "run make demo first: $(DEMO_MODEL) is missing" >&2; exit 1)
	mkdir -p $(DEMO_FEATURES)
	ids=$$(tr , '\n' < $(DEMO_TREE)/exp/test_id.txt | xargs printf '%04d|'); \
	  (cd $(DEMO_TREE) && ls cam[1245]/*/*.jpg | grep -E "/($${ids%|})/") > $(DEMO_FEATURES)/gallery.txt
	$(PY) -m tvilfm_jax.extract --model $(DEMO_MODEL) --images $(DEMO_TREE) --file_list $(DEMO_FEATURES)/gallery.txt \
	  --modality rgb --layout sysu --output $(DEMO_FEATURES)/gallery
	$(PY) -m tvilfm_jax.extract --model $(DEMO_MODEL) --images $(DEMO_TREE) --modality ir --layout sysu \
	  --captions $(DEMO_TREE)/Text/Blip_IR/caption_dict_Blip_IR.json --output $(DEMO_FEATURES)/queries
	$(PY) -m tvilfm_jax.serve --gallery $(DEMO_FEATURES)/gallery --queries $(DEMO_FEATURES)/queries

test: install-test
	TVILFM_TFDS_CLI=$(TFDS_VENV)/bin/tfds JAX_PLATFORMS=cpu $(PY) -m pytest -q

# JAX vs the PyTorch reference on this CPU (reduced sizes); GPU: bash benchmarks/gpu.sh
bench: install-test
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) $(TFDS_VENV) build *.egg-info
