"""The `mandate` command: serve, validate, explain (SPEC §7). Every serve flag is also MANDATE_*."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

import orjson

from authz.admin.commands import add_client_options, chain_from_server, run_reload, run_status
from authz.admin.commands import add_parsers as add_admin_parsers
from authz.export_istio import add_export_parser, run_export
from authz.policy.compiler import compile_directory
from authz.policy.loader import PolicyLoadError
from authz.serve.grpc_server import GRPC_SERVERS, ListenError
from authz.workflow.commands import COMMANDS as WORKFLOW_COMMANDS
from authz.workflow.commands import add_parsers as add_workflow_parsers
from authz.workflow.commands import add_policies_option, policies_of
from authz.workflow.commands import run as run_workflow

if TYPE_CHECKING:
    from authz.chains.store import ChainRecord
    from authz.serve.service import ServeOptions


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MANDATE_{name}", default)


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`mandate serve`: every flag also a MANDATE_* variable, and the help shows what applies when none is given."""
    serve = commands.add_parser("serve", help="run the Envoy Authorization gRPC service")
    serve.add_argument("--policies", default=_env("POLICIES", "policies"), help="policy directory [MANDATE_POLICIES]")
    serve.add_argument(
        "--listen", default=_env("LISTEN", "0.0.0.0:9191"), help="gRPC address (default %(default)s) [MANDATE_LISTEN]"
    )
    serve.add_argument("--redis", default=_env("REDIS"), help="chain store URL; absent: in-process [MANDATE_REDIS]")
    serve.add_argument(
        "--chain-key", default=_env("CHAIN_KEY"), help="file of HMAC keys, one per line [MANDATE_CHAIN_KEY]"
    )
    serve.add_argument(
        "--chain-store-timeout",
        type=float,
        default=float(_env("CHAIN_STORE_TIMEOUT", "0.25") or 0.25),
        help="seconds one chain store command may take before the request is denied [MANDATE_CHAIN_STORE_TIMEOUT]",
    )
    serve.add_argument(
        "--metrics-listen",
        default=_env("METRICS_LISTEN", "0.0.0.0:9090"),
        help="/metrics, /healthz, /readyz (default %(default)s); empty: none [MANDATE_METRICS_LISTEN]",
    )
    serve.add_argument(
        "--grpc-server",
        choices=GRPC_SERVERS,
        default=_env("GRPC_SERVER", "core"),
        help="gRPC server flavour (see BENCHMARKS.md) [MANDATE_GRPC_SERVER]",
    )
    serve.add_argument(
        "--decision-cache",
        type=int,
        default=int(_env("DECISION_CACHE", "10000") or 0),
        metavar="N",
        help="answers kept for repeated requests, per policy version; 0: decide every request afresh "
        "[MANDATE_DECISION_CACHE]",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=_env("WORKERS", "auto") or "auto",
        metavar="N|auto",
        help="processes sharing the port; auto (the default): one per CPU the pod's limit allows when --redis "
        "is given, else 1 [MANDATE_WORKERS]",
    )
    _add_admin_options(serve)


def _add_admin_options(serve: argparse.ArgumentParser) -> None:
    """The admin API's listener (docs/operations.md, "Admin API"): loopback unless authenticated."""
    serve.add_argument(
        "--admin-listen",
        default=_env("ADMIN_LISTEN", "127.0.0.1:9192"),
        help="admin gRPC API (default %(default)s); empty: none; another host needs --admin-key or mTLS "
        "[MANDATE_ADMIN_LISTEN]",
    )
    serve.add_argument("--admin-key", default=_env("ADMIN_KEY"), metavar="FILE", help="bearer keys [MANDATE_ADMIN_KEY]")
    serve.add_argument(
        "--admin-tls-cert", default=_env("ADMIN_TLS_CERT"), metavar="FILE", help="[MANDATE_ADMIN_TLS_CERT]"
    )
    serve.add_argument("--admin-tls-key", default=_env("ADMIN_TLS_KEY"), metavar="FILE", help="[MANDATE_ADMIN_TLS_KEY]")
    serve.add_argument(
        "--admin-client-ca",
        default=_env("ADMIN_CLIENT_CA"),
        metavar="FILE",
        help="mTLS: admin clients need a certificate this CA signed [MANDATE_ADMIN_CLIENT_CA]",
    )


def _workers(text: str) -> str | int:
    """`auto` or a whole number of at least 1; anything else is a usage error."""
    if text == "auto":
        return text
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number of at least 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mandate", description="Envoy ext_authz for AI agents: mission profiles and delegation chains."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    _add_serve_parser(commands)

    validate = commands.add_parser("validate", help="check a policy directory; exit 0 or print every error")
    add_policies_option(validate)
    validate.add_argument("--strict", action="store_true", help="exit 1 on warnings too (rules that can never match)")

    explain = commands.add_parser("explain", help="decide one described request and say why")
    add_policies_option(explain)
    explain.add_argument(
        "--request", required=True, help="YAML/JSON file: source, destination, method, host, path, headers, body"
    )
    explain.add_argument("--json", action="store_true", help="print the report as JSON")
    add_client_options(explain)  # --server: decide against a running server's live set instead

    chain = commands.add_parser("chain", help="inspect or revoke a delegation chain in the shared store")
    chain_commands = chain.add_subparsers(dest="chain_command", required=True)
    for name, text in (
        ("show", "the hops, parent, age and expiry of a chain"),
        ("revoke", "deny a chain and its descendants on every replica"),
    ):
        sub = chain_commands.add_parser(name, help=text)
        sub.add_argument("chain", help="a chain id, or a whole token <id>.<mac>")
        sub.add_argument("--redis", default=_env("REDIS"), help="the chain store URL [MANDATE_REDIS]")
        add_client_options(sub)  # --server: through a server's admin API (its in-process store too)
        sub.add_argument("--json", action="store_true", help="print the record as JSON")

    check = commands.add_parser("check", help="send one described request to a running server, as Envoy would")
    check.add_argument("--server", default="127.0.0.1:9191", help="address of mandate serve")
    check.add_argument("--request", required=True, help="the same request file format as explain")

    add_export_parser(commands)  # `mandate export istio` (authz/export_istio.py)
    add_admin_parsers(commands)  # `mandate status`, `mandate reload` (authz/admin/commands.py)
    add_workflow_parsers(commands)  # `mandate schema`, `test`, `diff` (authz/workflow/commands.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "validate":
        directory = policies_of(args)
        return _validate(directory, args.strict, args.read_secrets) if directory is not None else 2
    if args.command == "explain":
        return _explain(args)
    if args.command == "check":
        return _check(args)
    if args.command == "chain":
        return _chain(args)
    if args.command == "export":
        return run_export(args)
    if args.command in WORKFLOW_COMMANDS:
        return run_workflow(args)
    if args.command == "status":
        return run_status(args)
    if args.command == "reload":
        return run_reload(args)
    return _serve(args)


def _validate(directory: str, strict: bool = False, read_secrets: bool = True) -> int:
    """Every error of every file, or ok with the warnings about rules that can never match."""
    from authz.workflow.lint import warnings

    try:
        policy = compile_directory(directory, read_secrets)
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    found = warnings(directory)
    for warning in found:
        print(warning, file=sys.stderr)
    print(
        f"ok: {len(policy.profiles)} profiles, {len(policy.targets) - len(policy.profiles)} targets, version "
        f"{policy.version}" + (f", {len(found)} warning(s)" if found else "")
    )
    return 1 if strict and found else 0


def _explain(args: argparse.Namespace) -> int:
    from authz.explain import RequestFileError, explain, read_request_file, render_text

    if args.server:
        from authz.admin.commands import run_explain

        found = run_explain(args)
        if isinstance(found, int):
            return found
        print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode() if args.json else render_text(found))
        return 0 if found["decision"] != "deny" else 1
    directory = policies_of(args)
    if directory is None:
        return 2
    try:
        policy = compile_directory(directory, args.read_secrets)
        described = read_request_file(args.request)
    except PolicyLoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    except RequestFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    report = explain(policy, described)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json else render_text(report))
    return 0 if report["decision"] != "deny" else 1


def _check(args: argparse.Namespace) -> int:
    import grpc
    from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
    from google.protobuf.json_format import MessageToDict

    from authz.check.request import to_check_request
    from authz.explain import RequestFileError, read_request_file

    try:
        described = read_request_file(args.request)
    except RequestFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    if described.chain:
        print(
            f"{args.request}: `chain` is for explain; to check a chained request send its token in headers",
            file=sys.stderr,
        )
        return 2
    request = to_check_request(described.input)
    with grpc.insecure_channel(args.server) as channel:
        try:
            response = AuthorizationStub(channel).Check(request, timeout=5)
        except grpc.RpcError as exc:
            print(f"Check failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    print(orjson.dumps(MessageToDict(response), option=orjson.OPT_INDENT_2).decode())
    return 0 if response.HasField("ok_response") else 1


def _chain(args: argparse.Namespace) -> int:
    import time

    from authz.chains.tokens import chain_id_of

    chain_id = chain_id_of(args.chain)
    if bool(args.server) == bool(args.redis):
        print("mandate chain: give --server ADDR (a server's admin API) or --redis URL, not both", file=sys.stderr)
        return 2
    found = chain_from_server(args, chain_id) if args.server else _chain_from_redis(args, chain_id)
    if isinstance(found, int):
        return found
    record, revoked = found
    if record is None:
        if args.chain_command == "revoke":
            print(
                f"revoked chain {chain_id}; the store has no record of it (unknown, expired or lost), "
                "so only replicas still caching it had anything to deny"
            )
            return 0
        print(f"chain {chain_id}: unknown or expired", file=sys.stderr)
        return 1
    now = time.time()
    report = {
        "id": record.id,
        "hops": [{"profile": hop.profile, "principal": hop.principal or None} for hop in record.hops],
        "parent": record.parent or None,
        "lineage": list(record.lineage),
        "created": record.created,
        "age_seconds": round(now - record.created, 1),
        "expires_in_seconds": round(record.expires - now, 1),
        "revoked": revoked,
    }
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    if args.chain_command == "revoke":
        print(f"revoked chain {record.id} and every chain delegated from it")
    print(f"chain:   {record.id}")
    print(f"parent:  {record.parent or '(root)'}")
    print(f"age:     {report['age_seconds']}s, expires in {report['expires_in_seconds']}s")
    print(f"revoked: {'yes' if revoked else 'no'}")
    for depth, hop in enumerate(record.hops, start=1):
        print(f"  {depth}. {hop.profile}" + (f"  ({hop.principal})" if hop.principal else ""))
    return 0


def _chain_from_redis(args: argparse.Namespace, chain_id: str) -> tuple[ChainRecord | None, bool] | int:
    """`mandate chain show|revoke --redis`: (record or None, revoked), or an exit code."""
    from authz.chains.redis_store import RedisChainStore
    from authz.chains.store import StoreUnavailable

    store = RedisChainStore(args.redis, timeout=5.0)
    try:
        record = store.revoke(chain_id) if args.chain_command == "revoke" else store.get(chain_id)
        return record, args.chain_command == "revoke" or (record is not None and store.revoked_now(record))
    except StoreUnavailable as exc:
        print(f"chain store unavailable: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _serve(args: argparse.Namespace) -> int:
    from authz.admin.auth import AdminConfigError, AdminSettings, check_settings
    from authz.serve.service import ServeOptions

    if args.decision_cache < 0:
        print("--decision-cache must be 0 (off) or more", file=sys.stderr)
        return 2
    admin = AdminSettings(
        args.admin_listen, args.admin_key, args.admin_tls_cert, args.admin_tls_key, args.admin_client_ca
    )
    try:
        check_settings(admin)
    except AdminConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    options = ServeOptions(
        policies=args.policies,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        redis=args.redis,
        chain_key=args.chain_key,
        chain_store_timeout=args.chain_store_timeout,
        workers=_worker_count(args),
        grpc_server=args.grpc_server,
        decision_cache=args.decision_cache,
        admin=admin,
    )
    try:
        return _serve_workers(options) if options.workers > 1 else _serve_one(options)
    except ListenError as exc:
        print(exc, file=sys.stderr)  # a busy port is the operator's to fix: one line, not a traceback
        return 1


def _worker_count(args: argparse.Namespace) -> int:
    """`--workers auto`: every CPU the pod may use, once chains live in Redis. The in-process
    chain store lives in one process (a token another worker minted would not verify there),
    and the supervisor needs the metrics port to serve its workers' sum: so 1 without them."""
    if args.workers != "auto":
        return int(args.workers)
    from authz.serve.cpus import available_cpus

    cpus = available_cpus()
    if args.redis and args.metrics_listen:
        logging.getLogger("mandate").info("--workers auto: %d (the CPUs this pod may use)", cpus)
        return cpus
    if cpus > 1:
        logging.getLogger("mandate").info(
            "--workers auto: 1 of %d CPUs, since the chain store is in-process (give --redis, --chain-key and "
            "--metrics-listen to use them all)",
            cpus,
        )
    return 1


def _serve_workers(options: ServeOptions) -> int:
    """`--workers N`: refuse what would break the workers, and check the policies once, not in N workers."""
    from authz.serve.workers import Supervisor

    if not options.redis:
        print(
            "--workers above 1 needs --redis (and --chain-key): workers must share delegation chains", file=sys.stderr
        )
        return 2
    if not options.metrics_listen:
        print("--workers needs --metrics-listen: the supervisor serves every worker's metrics", file=sys.stderr)
        return 2
    try:
        compile_directory(options.policies)
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    return Supervisor(options).run()


def _serve_one(options: ServeOptions) -> int:
    from authz.chains.tokens import KeyFileError
    from authz.serve.service import MandateServer

    try:
        server = MandateServer(options)
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    except (KeyFileError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    server.run_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
