"""Every reason a decision can give, in one place: its HTTP status, what it counts as in the
metrics, and what it means.

A reason is a stable string: it is in the deny body, the audit line and the
`mandate_decisions_total{reason}` label, so dashboards and agents' developers rely on it. Steps
import the constants below and never spell a reason themselves; `Refusal` takes its status from
here. docs/policy.md's reason table is generated from this module (`python -m authz.reasons`)
and a test keeps the two equal.
"""

from __future__ import annotations

import sys
from typing import Final

OK, BAD_REQUEST, UNAUTHENTICATED, FORBIDDEN, TOO_MANY_REQUESTS, BAD_GATEWAY = 200, 400, 401, 403, 429, 502


class Reason:
    """One reason: `status` is the HTTP status of a deny; `chain_outcome` the label it adds to
    `mandate_chain_outcomes_total` ("" for none)."""

    __slots__ = ("chain_outcome", "meaning", "name", "status")

    def __init__(self, name: str, status: int, meaning: str, chain_outcome: str = "") -> None:
        self.name, self.status, self.meaning, self.chain_outcome = name, status, meaning, chain_outcome


REGISTRY: Final[dict[str, Reason]] = {}


def _reason(name: str, status: int, meaning: str, chain_outcome: str = "") -> str:
    if name in REGISTRY:
        raise ValueError(f"reason {name!r} registered twice")
    REGISTRY[name] = Reason(name, status, meaning, chain_outcome)
    return name


def status_of(reason: str) -> int:
    return REGISTRY[reason].status


ALLOWED: Final = _reason("allowed", OK, "Every scope along the chain allows the request.")

# --- who is calling (401) --------------------------------------------------------------------
NO_IDENTITY: Final = _reason("no_identity", UNAUTHENTICATED, "No SPIFFE ID: the request did not arrive over mTLS.")
INVALID_IDENTITY: Final = _reason("invalid_identity", UNAUTHENTICATED, "The caller's identity is not a SPIFFE ID.")
UNTRUSTED_TRUST_DOMAIN: Final = _reason(
    "untrusted_trust_domain", UNAUTHENTICATED, "The caller's trust domain is not one of `trustDomains`."
)
AMBIGUOUS_IDENTITY: Final = _reason(
    "ambiguous_identity", UNAUTHENTICATED, "`x-forwarded-client-cert` names more than one URI."
)

# --- the human behind the agent (SPEC §10): a user token that fails is refused even where no rule needs a user ---
TOKEN_MALFORMED: Final = _reason(
    "token_malformed",
    UNAUTHENTICATED,
    "A user token that is not a well-formed JWT (or lacks `sub` or `exp`), or several in one header.",
)
TOKEN_TOO_LARGE: Final = _reason("token_too_large", UNAUTHENTICATED, "A user token over 16 KiB.")
TOKEN_SIGNATURE: Final = _reason("token_signature", UNAUTHENTICATED, "The user token's signature does not verify.")
TOKEN_EXPIRED: Final = _reason("token_expired", UNAUTHENTICATED, "The user token's `exp` is past (more than 60 s ago).")
TOKEN_NOT_YET_VALID: Final = _reason(
    "token_not_yet_valid", UNAUTHENTICATED, "The user token's `nbf` or `iat` is ahead (more than 60 s)."
)
TOKEN_ISSUER: Final = _reason(
    "token_issuer", UNAUTHENTICATED, "Verified claims whose `iss` is not the issuer they were verified for."
)
TOKEN_AUDIENCE: Final = _reason(
    "token_audience", UNAUTHENTICATED, "The user token's `aud` names none of its issuer's `audiences`."
)
TOKEN_UNKNOWN_KEY: Final = _reason(
    "token_unknown_key", UNAUTHENTICATED, "No key of the token's issuer has its `kid` (keys belong to their issuer)."
)
TOKEN_ALGORITHM: Final = _reason(
    "token_algorithm",
    UNAUTHENTICATED,
    "The token's `alg` is not one its issuer's `algorithms` allows, or not its key's.",
)
TOKEN_KEYS_UNAVAILABLE: Final = _reason(
    "token_keys_unavailable", UNAUTHENTICATED, "The issuer's keys (`jwksUri`) could not be fetched: fails closed."
)
TOKEN_REFUSALS: Final = frozenset(
    {
        TOKEN_MALFORMED,
        TOKEN_TOO_LARGE,
        TOKEN_SIGNATURE,
        TOKEN_EXPIRED,
        TOKEN_NOT_YET_VALID,
        TOKEN_ISSUER,
        TOKEN_AUDIENCE,
        TOKEN_UNKNOWN_KEY,
        TOKEN_ALGORITHM,
        TOKEN_KEYS_UNAVAILABLE,
    }
)
USER_REQUIRED: Final = _reason(
    "user_required", UNAUTHENTICATED, "A rule with `users` and no user: no user token, and the chain records none."
)

# --- malformed requests (400) ----------------------------------------------------------------
INVALID_CHECK_REQUEST: Final = _reason("invalid_check_request", BAD_REQUEST, "The CheckRequest does not parse.")
PARTIAL_BODY: Final = _reason("partial_body", BAD_REQUEST, "The proxy cut the body short (raise maxRequestBytes).")
AMBIGUOUS_PATH: Final = _reason(
    "ambiguous_path", BAD_REQUEST, "The path could be read as another (`%2F`, `\\`, double encoding, `..`)."
)
MISSING_BODY: Final = _reason("missing_body", BAD_REQUEST, "A JSON-RPC request without a body.")
INVALID_JSON: Final = _reason("invalid_json", BAD_REQUEST, "The body is not JSON (or not UTF-8, or nested too deep).")
DUPLICATE_JSON_KEY: Final = _reason("duplicate_json_key", BAD_REQUEST, "A JSON object repeats a key.")
INVALID_JSONRPC: Final = _reason("invalid_jsonrpc", BAD_REQUEST, "The body is JSON but not JSON-RPC 2.0.")
INVALID_PARAMS: Final = _reason("invalid_params", BAD_REQUEST, "The params of an MCP call lack what its method needs.")
INVALID_HEADER: Final = _reason(
    "invalid_header", BAD_REQUEST, "`Mcp-Method`/`Mcp-Name` or `Content-Length` is not well formed."
)
MCP_HEADER_MISMATCH: Final = _reason(
    "mcp_header_mismatch", BAD_REQUEST, "`Mcp-Method`/`Mcp-Name` disagree with the body."
)
EMPTY_BATCH: Final = _reason("empty_batch", BAD_REQUEST, "An empty JSON-RPC batch.")
BATCH_NOT_ALLOWED: Final = _reason(
    "batch_not_allowed", BAD_REQUEST, "A JSON-RPC batch under an MCP revision without batches."
)
UNSUPPORTED_HTTP_METHOD: Final = _reason(
    "unsupported_http_method", BAD_REQUEST, "MCP Streamable HTTP has no requests of this HTTP method."
)

# --- refused by policy (403) -----------------------------------------------------------------
UNKNOWN_CALLER: Final = _reason("unknown_caller", FORBIDDEN, "No mission profile governs the caller.")
UNKNOWN_TARGET: Final = _reason("unknown_target", FORBIDDEN, "No Target or profile claims the destination.")
PATH_OUTSIDE_TARGET: Final = _reason("path_outside_target", FORBIDDEN, "The path is outside the target's `pathPrefix`.")
UNSUPPORTED_BINDING: Final = _reason(
    "unsupported_binding", FORBIDDEN, "A request to an agent that neither A2A binding places."
)
UNKNOWN_A2A_METHOD: Final = _reason("unknown_a2a_method", FORBIDDEN, "A JSON-RPC method A2A does not define.")
SERVER_NOT_ALLOWED: Final = _reason("server_not_allowed", FORBIDDEN, "No rule of the scope names this MCP server.")
TOOL_NOT_ALLOWED: Final = _reason(
    "tool_not_allowed", FORBIDDEN, "No rule for the server lists the tool (or its `when` is false)."
)
RESOURCE_NOT_ALLOWED: Final = _reason(
    "resource_not_allowed", FORBIDDEN, "No rule for the server matches the resource URI."
)
PROMPT_NOT_ALLOWED: Final = _reason("prompt_not_allowed", FORBIDDEN, "No rule for the server lists the prompt.")
METHOD_NOT_ALLOWED: Final = _reason("method_not_allowed", FORBIDDEN, "An MCP method that needs a `methods` entry.")
AGENT_NOT_ALLOWED: Final = _reason("agent_not_allowed", FORBIDDEN, "No `agents` rule of the scope names this agent.")
A2A_METHOD_NOT_ALLOWED: Final = _reason(
    "a2a_method_not_allowed", FORBIDDEN, "The `agents` rule does not list this A2A method."
)
EGRESS_NOT_ALLOWED: Final = _reason("egress_not_allowed", FORBIDDEN, "No `egress` rule matches host, path and method.")
HTTP_NOT_ALLOWED: Final = _reason("http_not_allowed", FORBIDDEN, "No `http` rule matches path and method.")
CONDITION_ERROR: Final = _reason("condition_error", FORBIDDEN, "A `when` failed at run time (denies).")
CALLER_NOT_ACCEPTED: Final = _reason(
    "caller_not_accepted", FORBIDDEN, "The callee's `delegation.acceptFrom` does not name the caller."
)

USER_NOT_ALLOWED: Final = _reason(
    "user_not_allowed", FORBIDDEN, "The request's user is none of the `users` a rule (or grant) names."
)

# --- delegation chains (403; a token's integrity is enforced even in dry-run) --------------------
CHAIN_REQUIRED: Final = _reason("chain_required", FORBIDDEN, "A `requireChain` profile called without a chain token.")
CHAIN_FORGED: Final = _reason("chain_forged", FORBIDDEN, "The token's MAC, or its record's seal, is wrong.", "forged")
CHAIN_UNKNOWN: Final = _reason("chain_unknown", FORBIDDEN, "No record behind the token: unknown or expired.", "unknown")
CHAIN_NOT_HELD: Final = _reason("chain_not_held", FORBIDDEN, "The token was handed to another agent.", "not_held")
CHAIN_REVOKED: Final = _reason(
    "chain_revoked", FORBIDDEN, "The chain, or one it descends from, was revoked.", "revoked"
)
CHAIN_STORE_UNAVAILABLE: Final = _reason(
    "chain_store_unavailable", FORBIDDEN, "The chain store cannot be asked or heard.", "store_unavailable"
)
CHAIN_TOO_DEEP: Final = _reason("chain_too_deep", FORBIDDEN, "The chain would exceed the smallest `maxDepth`.")
CHAIN_REENTRY: Final = _reason("chain_reentry", FORBIDDEN, "A hop would appear twice without `allowReentry`.")
CHAIN_PROFILE_UNKNOWN: Final = _reason("chain_profile_unknown", FORBIDDEN, "The chain names a profile that is gone.")
USER_MISMATCH: Final = _reason(
    "user_mismatch",
    FORBIDDEN,
    "A user token presented with a chain minted for another user, or for none.",
    "user_mismatch",
)
DELEGATION_WITHDRAWN: Final = _reason(
    "delegation_withdrawn", FORBIDDEN, "A hop may no longer delegate to the next (the policy changed)."
)

# --- the response path (SPEC §9): a list answer Mandate cannot vouch for is refused, never passed on ---
LIST_CONTEXT_MISSING: Final = _reason(
    "list_context_missing",
    BAD_GATEWAY,
    "A list answer came without Mandate's ext_authz metadata: the filters are not as `mandate export envoy` prints.",
)
LIST_CALLER_CHANGED: Final = _reason(
    "list_caller_changed", FORBIDDEN, "A list answer's caller is not the one Mandate's ext_authz answer was for."
)
LIST_UNREADABLE: Final = _reason(
    "list_unreadable", BAD_GATEWAY, "A list answer of a content type, encoding or shape Mandate cannot read."
)
LIST_TOO_LARGE: Final = _reason("list_too_large", BAD_GATEWAY, "A list answer larger than Mandate filters.")
LIST_CALLER_BUSY: Final = _reason(
    "list_caller_busy",
    TOO_MANY_REQUESTS,
    "The caller already has as many list answers being filtered as one caller may (a quarter of the process's).",
)

INTERNAL_ERROR: Final = _reason("internal_error", FORBIDDEN, "Mandate failed to decide or answer; see its log.")


def markdown() -> str:
    """The reason table of docs/policy.md."""
    rows = [f"| `{r.name}` | {r.status} | {r.meaning} |" for r in REGISTRY.values()]
    return "\n".join(["| reason | status | meaning |", "|---|---|---|", *rows]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
