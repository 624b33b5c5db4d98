"""Thin HTTP layer: parse, call the engine or the store, shape the response (no compute here)."""
