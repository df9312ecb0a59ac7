"""What the tests share that is not a fixture (fixtures are in the conftest.py files).

For the end-to-end suite: a throwaway PKI, a real Envoy, `mandate serve` as a subprocess, and
real MCP / A2A / HTTP upstreams that record what reached them (with `upstreams/mcp_catalog`
and `upstreams/odd_mcp`, the lists the response path filters, and `list_policies` for them). These modules never import
`authz`: the e2e suite drives Mandate only through its CLI, gRPC port, metrics endpoint and
stdout, exactly as an operator would.

For the unit tests: the example policy set's paths and names (`example_policies`), the
delegation tests' cast (`chain_cast`), AuthzInput builders (`requests`), CheckResponse
readers (`answers`), a settable clock and a switchable chain store (`chain_doubles`), a second
server on a busy port (`busy_ports`), protobuf bytes by hand (`protowire`), Envoy's side of an
ext_proc stream (`ext_proc`). `requests` and
`chain_doubles` import `authz`: they are for in-process tests.

Imported one way only, `from tests.harness.<module> import ...` (tests/unit/test_layout.py).
"""
