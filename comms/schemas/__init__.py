"""JSON Schemas of the event contract, generated from the pydantic models (`comms schema`).

The files beside this module are committed so producers can read them without Python; a test
checks that they match the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from comms.events import EVENT_TYPES, Envelope

HERE = Path(__file__).parent


def schema_documents() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {"cloudevent-envelope.json": Envelope.model_json_schema()}
    for name, model in EVENT_TYPES.items():
        s = model.model_json_schema()
        s["$id"] = f"https://district-comms.example/schemas/{name}.json"
        s["description"] = (model.__doc__ or "").strip() + f" (CloudEvents type `{name}`, the event's `data`)"
        docs[f"{name}.json"] = s
    return docs


def write_schemas(directory: Path = HERE) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, doc in schema_documents().items():
        path = directory / fname
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
