"""Readers of a CheckResponse, the answer Envoy acts on: what was decided, under which id, and
the headers it sets on the request (an allow) or the response (a deny)."""

from __future__ import annotations

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse


def outcome(response: CheckResponse) -> tuple[str, str]:
    """(decision, reason), from the dynamic metadata."""
    fields = response.dynamic_metadata.fields
    return fields["decision"].string_value, fields["reason"].string_value


def decision_id(response: CheckResponse) -> str:
    return response.dynamic_metadata.fields["decision_id"].string_value


def header(response: CheckResponse, name: str) -> str:
    """The value of header `name` the answer sets, or ""."""
    part = response.ok_response if response.HasField("ok_response") else response.denied_response
    return next((option.header.value for option in part.headers if option.header.key == name), "")
