"""The committed JSON Schemas are what the models say (run `comms schema` after changing a model)."""

from __future__ import annotations

import json

from comms.schemas import HERE, schema_documents


def test_committed_schemas_match_models() -> None:
    for name, doc in schema_documents().items():
        assert json.loads((HERE / name).read_text("utf-8")) == doc, f"comms/schemas/{name} is stale"
