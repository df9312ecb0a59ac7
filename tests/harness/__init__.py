"""End-to-end test harness for Mandate: a throwaway PKI, a real Envoy, `mandate serve` as a
subprocess, and real MCP / A2A / HTTP upstreams that record what reached them.

Nothing here imports `authz`: the suite drives Mandate only through its CLI, gRPC port,
metrics endpoint and stdout, exactly as an operator would.
"""
