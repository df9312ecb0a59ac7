import httpx, json
from harness.clients import raw_client, run_async, mcp_client
from harness.policies import GITHUB_HOST, BILLING_HOST
from mcp import MCPError

def test_smoke(envoy, pki, support_cert, nobody_cert, mcp_upstream, mandate):
    with raw_client(envoy, pki, support_cert, GITHUB_HOST) as c:
        r = c.post("/mcp", json={"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{}}}, headers={"mcp-protocol-version":"2026-07-28"})
        print(r.status_code, r.headers, r.text)
        r = c.post("/mcp", content=b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_me","name":"x"}}')
        print(r.status_code, r.text)
        r = c.post("/mcp/..%2Fadmin", json={"jsonrpc":"2.0","id":8,"method":"ping"})
        print(r.status_code, r.text)
    with raw_client(envoy, pki, nobody_cert, GITHUB_HOST) as c:
        r = c.post("/mcp", json={"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{}}})
        print(r.status_code, r.headers, r.text)
    async def go(mode):
        async with mcp_client(envoy, pki, support_cert, GITHUB_HOST, mode=mode) as cl:
            r = await cl.call_tool("list_issues", {"repo": "acme/web"})
            print(mode, r)
            try:
                await cl.call_tool("create_issue", {"repo": "acme/web", "title": "x"})
            except MCPError as e:
                print("ERR", e.error)
    for m in ["auto", "2026-07-28", "legacy"]:
        run_async(go(m))
    for r in mcp_upstream.recorder.requests:
        print(r.method, r.path, r.jsonrpc_method, r.header_values("x-caller-identity"))
    print(mandate.stdout_text()[-3000:])
    print(mandate.decisions())
    assert 0
