"""What a user's token (SPEC §10) costs Mandate, in process: a JWT verified the first time it is
seen (RS256 and ES256, keys from a JWKS file), the same token seen again, and a whole Check with
and without one (decision cache off, then a decision-cache hit).

    python -m loadtest.users [--quick]

Each figure is the median (and minimum) of 7 rounds, µs per call; the machine is shared, so
compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from authz.check.pipeline import Authorizer
from authz.check.request import AuthzInput, to_check_request
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory

ISSUER = "https://idp.example.com"
POLICY = """
apiVersion: mandate.dev/v1alpha1
kind: Settings
metadata: {name: default}
spec:
  users:
    issuers: [{issuer: "%(issuer)s", audiences: [mandate], jwksFile: "%(jwks)s"}]
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: billing-db}
spec: {kind: mcp, hosts: [billing-db.local]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: billing-agent}
spec:
  principals: [spiffe://cluster.local/ns/billing/sa/billing-agent]
  mission: refunds for finance
  mcp:
    - {server: billing-db, tools: [refund], users: {groups: [finance]}}
    - {server: billing-db, tools: [ping]}
"""
CALLER = "spiffe://cluster.local/ns/billing/sa/billing-agent"


def per_call(call: Callable[[int], object], calls: int) -> tuple[float, float]:
    rounds = []
    for _ in range(7):
        started = time.perf_counter_ns()
        for index in range(calls):
            call(index)
        rounds.append((time.perf_counter_ns() - started) / calls / 1000)
    return statistics.median(rounds), min(rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few calls: a smoke test")
    calls = 20 if parser.parse_args(argv).quick else 2000
    keys = {"RS256": rsa.generate_private_key(65537, 2048), "ES256": ec.generate_private_key(ec.SECP256R1())}
    policy = _policy(keys)
    print("| what | median µs | min µs |\n|---|---|---|")
    for algorithm in keys:
        _verifying(policy, keys, algorithm, calls)
    bearer = {"authorization": f"Bearer {_token(keys, 'alice', 'RS256')}"}
    for name, headers, tool, cache in (
        ("Check without a token, decided afresh", {}, "ping", 0),
        ("Check with a token seen before, decided afresh", bearer, "refund", 0),
        ("Check with a token, a decision-cache hit", bearer, "refund", 10_000),
    ):
        _checking(name, Authorizer(policy, decision_cache=cache), headers, tool, calls)


def _policy(keys: dict[str, Any]) -> PolicySet:
    """The policy above, trusting the keys' public halves from a JWKS file."""
    directory = Path(tempfile.mkdtemp(prefix="mandate-users-"))
    published = [
        {**json.loads(RSAAlgorithm.to_jwk(keys["RS256"].public_key())), "kid": "RS256", "alg": "RS256"},
        {**json.loads(ECAlgorithm.to_jwk(keys["ES256"].public_key())), "kid": "ES256", "alg": "ES256"},
    ]
    (directory / "jwks.json").write_text(json.dumps({"keys": published}))
    (directory / "policy.yaml").write_text(POLICY % {"issuer": ISSUER, "jwks": directory / "jwks.json"})
    return compile_directory(directory)


def _token(keys: dict[str, Any], sub: str, algorithm: str) -> str:
    claims = {"iss": ISSUER, "sub": sub, "aud": "mandate", "exp": int(time.time()) + 3600, "groups": ["finance"]}
    return jwt.encode(claims, keys[algorithm], algorithm=algorithm, headers={"kid": algorithm})


def _verifying(policy: PolicySet, keys: dict[str, Any], algorithm: str, calls: int) -> None:
    users = policy.settings.users
    assert users is not None
    fresh = iter([f"Bearer {_token(keys, f'u{i}', algorithm)}" for i in range(calls * 7)])
    row(
        f"{algorithm} token, first seen (verified)",
        per_call(lambda _: users.from_header(next(fresh), time.time()), calls),
    )
    again = f"Bearer {_token(keys, 'alice', algorithm)}"
    row(f"{algorithm} token, seen before", per_call(lambda _: users.from_header(again, time.time()), calls * 10))


def _checking(name: str, authorizer: Authorizer, headers: dict[str, str], tool: str, calls: int) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s"}}' % tool.encode()
    payload = to_check_request(
        AuthzInput("POST", "/mcp", "billing-db.local", headers, body, CALLER)
    ).SerializeToString()
    row(name, per_call(lambda _: authorizer.check_bytes(payload), calls))


def row(name: str, figures: tuple[float, float]) -> None:
    print(f"| {name} | {figures[0]:.2f} | {figures[1]:.2f} |")


if __name__ == "__main__":
    main()
