"""What runs the steps of `authz/check/` as a server: `mandate serve` (`service.py`), its gRPC
flavours (`grpc_server.py`), the `--workers` supervisor, policy reload, metrics and the audit log."""
