# The two commands a newcomer needs: `make serve` and `make test` (see README.md).
.PHONY: serve test setup setup-dev bench lint

serve: setup
	.venv/bin/circuitscope serve

test: setup-dev
	.venv/bin/python -m pytest -q

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

bench: setup-dev
	.venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python bench/peers.py

lint:
	.venv/bin/ruff check app tests bench
