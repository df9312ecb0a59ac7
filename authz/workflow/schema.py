"""`mandate schema`: the JSON Schema of one policy document, generated from the loader's models.

authz/policy/model.py is the only description of the format: the loader validates with it, and
this module asks pydantic for its JSON Schema (camelCase keys, unknown keys refused, every
field's docstring as its description). docs/policy.schema.json is this output, published for
editors; tests/unit/test_schema.py keeps it equal. The schema checks shape only: references
between documents, CEL and principals are `mandate validate`'s.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter

from authz.policy.model import API_VERSION, Document

PUBLISHED = "docs/policy.schema.json"


def policy_schema() -> dict[str, Any]:
    """One policy document: a Target, a MissionProfile or Settings, told apart by `kind`."""
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[Document, Field(discriminator="kind")])
    schema = adapter.json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Mandate policy document ({API_VERSION})",
        "description": "One YAML document of a Mandate policy directory: kind Target, MissionProfile or Settings.",
        **schema,
    }


def schema_text() -> str:
    """The schema as published: indented, keys in the models' order, one newline at the end."""
    return orjson.dumps(policy_schema(), option=orjson.OPT_INDENT_2).decode() + "\n"
