"""The three rooms keep to themselves: engine (torch) never imports web/store; store never imports torch."""

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

FORBIDDEN = {
    "engine": ("fastapi", "starlette", "sqlalchemy", "alembic", "app.web", "app.store", "app.main", "uvicorn"),
    "store": ("torch", "transformers", "fastapi", "starlette", "app.engine", "app.web"),
    "web": ("torch", "transformers", "sqlalchemy.orm.decl_api"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_do_not_reach_into_each_other(room):
    files = sorted((APP / room).rglob("*.py"))
    assert files, f"app/{room} has no modules"
    offences = [f"{path.relative_to(APP)} imports {name}" for path in files for name in _imports(path)
                if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[room])]
    assert offences == []
