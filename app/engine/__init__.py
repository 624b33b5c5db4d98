"""Pure compute: torch + transformers. Never imports the web layer or the store (tests/test_layering.py)."""

ENGINE_VERSION = "1"
