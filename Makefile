.PHONY: install demo test lint
install:
	bash scripts/install.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
lint:
	.venv/bin/ruff check benchkit tests && .venv/bin/ruff format --check benchkit tests
