"""The `mandate` command: serve, validate, explain (SPEC §7). Every serve flag is also MANDATE_*."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import orjson

from .policy.compiler import compile_directory
from .policy.loader import PolicyLoadError


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MANDATE_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mandate", description="Envoy ext_authz for AI agents: mission profiles and delegation chains.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the Envoy Authorization gRPC service")
    serve.add_argument("--policies", default=_env("POLICIES", "policies"), help="policy directory [MANDATE_POLICIES]")
    serve.add_argument("--listen", default=_env("LISTEN", "0.0.0.0:9191"), help="gRPC address [MANDATE_LISTEN]")
    serve.add_argument("--redis", default=_env("REDIS"), help="chain store URL; absent: in-process [MANDATE_REDIS]")
    serve.add_argument("--chain-key", default=_env("CHAIN_KEY"), help="file of HMAC keys, one per line [MANDATE_CHAIN_KEY]")
    serve.add_argument("--metrics-listen", default=_env("METRICS_LISTEN", "0.0.0.0:9090"), help="/metrics, /healthz, /readyz [MANDATE_METRICS_LISTEN]")
    serve.add_argument("--workers", type=int, default=int(_env("WORKERS", "1") or 1), help="processes sharing the port [MANDATE_WORKERS]")

    validate = commands.add_parser("validate", help="check a policy directory; exit 0 or print every error")
    validate.add_argument("directory")

    explain = commands.add_parser("explain", help="decide one described request and say why")
    explain.add_argument("--policies", default=_env("POLICIES", "policies"))
    explain.add_argument("--request", required=True, help="YAML/JSON file: source, destination, method, host, path, headers, body")
    explain.add_argument("--json", action="store_true", help="print the report as JSON")

    check = commands.add_parser("check", help="send one described request to a running server, as Envoy would")
    check.add_argument("--server", default="127.0.0.1:9191", help="address of mandate serve")
    check.add_argument("--request", required=True, help="the same request file format as explain")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "validate":
        return _validate(args.directory)
    if args.command == "explain":
        return _explain(args)
    if args.command == "check":
        return _check(args)
    return _serve(args)


def _validate(directory: str) -> int:
    try:
        policy = compile_directory(directory)
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(policy.profiles)} profiles, {len(policy.targets) - len(policy.profiles)} targets, version {policy.version}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from .explain import RequestFileError, explain, read_request_file, render_text

    try:
        policy = compile_directory(args.policies)
        request = read_request_file(args.request)
    except PolicyLoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    except RequestFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    report = explain(policy, request)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json else render_text(report))
    return 0 if report["decision"] != "deny" else 1


def _check(args: argparse.Namespace) -> int:
    import grpc
    from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
    from google.protobuf.json_format import MessageToDict

    from .explain import RequestFileError, read_request_file
    from .request import to_check_request

    try:
        request = to_check_request(read_request_file(args.request))
    except RequestFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    with grpc.insecure_channel(args.server) as channel:
        try:
            response = AuthorizationStub(channel).Check(request, timeout=5)
        except grpc.RpcError as exc:
            print(f"Check failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    print(orjson.dumps(MessageToDict(response), option=orjson.OPT_INDENT_2).decode())
    return 0 if response.HasField("ok_response") else 1


def _serve(args: argparse.Namespace) -> int:
    from .server import MandateServer, ServeOptions

    if args.workers != 1:
        print("--workers other than 1 is not supported yet: run more replicas instead", file=sys.stderr)
        return 2
    options = ServeOptions(
        policies=args.policies,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        redis=args.redis,
        chain_key=args.chain_key,
        workers=args.workers,
    )
    try:
        server = MandateServer(options)
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    server.run_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
