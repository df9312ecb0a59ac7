"""AuthzInputs, the requests an in-process Authorizer decides, as Envoy would describe them.

Two families: `mcp`, `tool`, `a2a` and `http` call into the example policy set (a caller and
host from `example_policies.py` unless told otherwise); `use_tool` and `call_agent` are calls
between the delegation tests' agents (`chain_cast.py`), with a chain token when one is given.
"""

from __future__ import annotations

import orjson

from authz.check.request import AuthzInput
from tests.harness.chain_cast import CHAIN_HEADER, TOOLS_HOST, host, principal
from tests.harness.example_policies import BILLING_HOST, GITHUB_HOST, SUPPORT

# --- the example policy set --------------------------------------------------------------


def mcp(
    method: str,
    principal: str = SUPPORT,
    headers: dict[str, str] | None = None,
    path: str = "/mcp",
    host: str = GITHUB_HOST,
    **params,
) -> AuthzInput:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    return AuthzInput(method="POST", path=path, host=host, headers=headers or {}, body=body, source_principal=principal)


def tool(name: str, principal: str = SUPPORT, **arguments) -> AuthzInput:
    return mcp("tools/call", principal, name=name, arguments=arguments)


def a2a(method: str, principal: str = SUPPORT, host: str = BILLING_HOST) -> AuthzInput:
    body = orjson.dumps({"jsonrpc": "2.0", "id": "x", "method": method, "params": {}})
    return AuthzInput(method="POST", path="/", host=host, body=body, source_principal=principal)


def http(method: str, host: str, path: str, principal: str = SUPPORT) -> AuthzInput:
    return AuthzInput(method=method, path=path, host=host, source_principal=principal)


# --- the delegation cast -----------------------------------------------------------------


def use_tool(
    caller: str, tool: str, token: str | None = None, *, source: str | None = None, destination: str = ""
) -> AuthzInput:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
    headers = {CHAIN_HEADER: token} if token is not None else {}
    return AuthzInput(
        method="POST",
        path="/mcp",
        host=TOOLS_HOST,
        headers=headers,
        body=body,
        source_principal=source or principal(caller),
        destination_principal=destination,
    )


def call_agent(
    caller: str,
    callee: str,
    token: str | None = None,
    *,
    method: str = "SendMessage",
    source: str | None = None,
    destination: str = "",
) -> AuthzInput:
    body = orjson.dumps({"jsonrpc": "2.0", "id": "a2a-1", "method": method, "params": {}})
    headers = {CHAIN_HEADER: token} if token is not None else {}
    return AuthzInput(
        method="POST",
        path="/",
        host=host(callee),
        headers=headers,
        body=body,
        source_principal=source or principal(caller),
        destination_principal=destination,
    )
