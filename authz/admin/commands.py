"""The CLI's admin-API commands: `mandate status`, `mandate reload`, and the `--server` forms of
`mandate chain show|revoke` and `mandate explain` (authz/cli.py wires them in)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from authz.admin.client import AdminClient, AdminCredentials, AdminError, as_dict
from authz.admin.v1alpha1 import admin_pb2
from authz.chains.store import ChainRecord, Hop

DEFAULT_SERVER = "127.0.0.1:9192"  # `mandate serve --admin-listen`'s default


def add_client_options(parser: argparse.ArgumentParser, server_required: bool = False) -> None:
    """How to reach and authenticate to a server's admin API."""
    env_server = os.environ.get("MANDATE_ADMIN_SERVER")
    parser.add_argument(
        "--server",
        default=env_server if not server_required else None,
        required=server_required and env_server is None,
        help=f"the admin API of mandate serve (its --admin-listen, e.g. {DEFAULT_SERVER}) [MANDATE_ADMIN_SERVER]",
    )
    parser.add_argument(
        "--admin-key",
        default=os.environ.get("MANDATE_ADMIN_KEY"),
        metavar="FILE",
        help="bearer key file (the server's --admin-key) [MANDATE_ADMIN_KEY]",
    )
    parser.add_argument("--admin-ca", metavar="FILE", help="TLS: the CA that signed the server's certificate")
    parser.add_argument("--admin-cert", metavar="FILE", help="mTLS: this client's certificate (PEM)")
    parser.add_argument("--admin-cert-key", metavar="FILE", help="mTLS: this client's private key (PEM)")


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = commands.add_parser("status", help="the live policy set of a running server (admin API)")
    add_client_options(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    reload = commands.add_parser("reload", help="make a running server read its policy directory now (admin API)")
    add_client_options(reload)


def client(args: argparse.Namespace) -> AdminClient:
    credentials = AdminCredentials(args.admin_key, args.admin_ca, args.admin_cert, args.admin_cert_key)
    return AdminClient(args.server or DEFAULT_SERVER, credentials)


def run_status(args: argparse.Namespace) -> int:
    try:
        with client(args) as admin:
            report = as_dict(admin.status())
    except AdminError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"policy:   {report['policy_version']} from {report['policies']}, loaded {_when(report['loaded_at'])}")
    print(f"          {report['profiles']} profiles, {report['targets']} targets")
    last = report.get("last_reload")
    if last:
        verdict = "applied" if last["applied"] else f"REJECTED ({len(last['errors'])} errors; the set above stays)"
        print(f"reload:   {verdict} at {_when(last['at'])}")
        for error in last["errors"]:
            print(f"  {error}")
    print(f"chains:   {report['chain_store']}")
    print(f"serving:  mandate {report['mandate_version']}, {report['workers']} worker(s), {report['request_path']}")
    for line in _worker_lines(report):
        print(line)
    return 0


def _worker_lines(report: dict[str, Any]) -> list[str]:
    """With --workers, the set each worker serves: the lines above are the supervisor's copy."""
    lines = []
    for worker in report.get("worker_sets", []):
        version = worker["policy_version"]
        if not version:
            state = "has reported no set (starting, or gone)"
        elif version == report["policy_version"]:
            state = f"serves the set above, loaded {_when(worker['loaded_at'])}"
        else:
            state = f"serves {version}, NOT the set above (loaded {_when(worker['loaded_at'])}; see its log)"
        lines.append(f"worker:   pid {worker['pid']} {state}")
    return lines


def run_reload(args: argparse.Namespace) -> int:
    try:
        with client(args) as admin:
            result = admin.reload()
    except AdminError as exc:
        print(exc, file=sys.stderr)
        return 2
    if result.applied:
        print(f"reloaded: policy version {result.policy_version}")
        return 0
    for error in result.errors:
        print(error, file=sys.stderr)
    print(f"rejected: {len(result.errors)} error(s); version {result.policy_version} stays live", file=sys.stderr)
    return 1


def run_explain(args: argparse.Namespace) -> dict[str, object] | int:
    """The server's report for the request file, or an exit code when there is none."""
    try:
        text = Path(args.request).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{args.request}: cannot read request: {exc}", file=sys.stderr)
        return 2
    try:
        with client(args) as admin:
            return admin.explain(text)
    except AdminError as exc:
        print(exc, file=sys.stderr)
        return 2


def chain_from_server(args: argparse.Namespace, chain_id: str) -> tuple[ChainRecord | None, bool] | int:
    """`mandate chain show|revoke --server`: (record or None, revoked), or an exit code."""
    try:
        with client(args) as admin:
            if args.chain_command == "revoke":
                reply = admin.chain_revoke(chain_id)
                return (_record(reply.chain) if reply.HasField("chain") else None), True
            chain = admin.chain_show(chain_id)
            return _record(chain), chain.revoked
    except AdminError as exc:
        if exc.code.name == "NOT_FOUND":
            return None, False
        print(exc, file=sys.stderr)
        return 2


def _record(chain: admin_pb2.Chain) -> ChainRecord:
    hops = tuple(Hop(hop.profile, hop.principal) for hop in chain.hops)
    return ChainRecord(chain.id, hops, tuple(chain.lineage), chain.created, chain.expires)


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
