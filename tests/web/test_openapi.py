"""OpenAPI drift guard: the schema documents exactly the API of docs/CONTRACTS.md, and vice versa."""

from __future__ import annotations

import re
from pathlib import Path

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "CONTRACTS.md"



def contract_routes() -> set[tuple[str, str]]:
    """(method, path shape) of every row of the HTTP API table in docs/CONTRACTS.md.

    A first cell reads like `GET /a/{slug}` / `/a/{slug}.json`, or `GET /m/.../{neuron_id}` / `.json`.
    """
    routes = set()
    table = CONTRACTS.read_text(encoding="utf-8").split("## HTTP API", 1)[1]
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) < 3 or not cells[1].strip().startswith("`"):
            continue
        first, *more = re.findall(r"`([^`]+)`", cells[1])
        method, path = first.split()
        for extra in more:
            routes.add((method.lower(), _shape(path + extra if extra.startswith(".") else extra)))
        routes.add((method.lower(), _shape(path)))
    return routes


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_contract_table_is_parsed():
    routes = contract_routes()
    assert ("post", "/api/analyses") in routes and ("get", "/a/{}.json") in routes
    assert ("get", "/m/{}/n/{}.json") in routes and len(routes) >= 16


def test_schema_documents_exactly_the_contract_api(client):
    schema = client.get("/openapi.json").json()
    served = {(method, _shape(path)) for path, ops in schema["paths"].items() for method in ops}
    documented = contract_routes()
    assert served - documented == set(), "served but not in docs/CONTRACTS.md"
    assert documented - served == set(), "in docs/CONTRACTS.md but not served"


def test_every_operation_documents_its_answers(client):
    schema = client.get("/openapi.json").json()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert op.get("summary") and op.get("description"), (method, path)  # from the docstrings
            assert "200" in op["responses"], (method, path)
            if path.startswith("/api/"):
                assert {"400", "404", "422"} <= set(op["responses"]), (method, path)
    analyses = schema["paths"]["/api/analyses"]["post"]["responses"]
    assert "202" in analyses
    error = schema["components"]["schemas"]["ErrorOut"]
    assert error["properties"]["error"]["$ref"].endswith("ErrorDetail")
