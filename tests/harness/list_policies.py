"""The policy set of the response path's end-to-end tests: the catalog MCP server (reached by
one host answering in SSE, one in JSON, one keeping its events for resumed streams), a
hand-written one (`odd_mcp`), and three callers whose lists differ: support-agent,
intern-agent, and support-agent acting for orchestrator.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness.pki import spiffe_id

CATALOG_SSE = "catalog-sse.tools.svc.cluster.local"
CATALOG_JSON = "catalog-json.tools.svc.cluster.local"
CATALOG_RESUMABLE = "catalog-resumable.tools.svc.cluster.local"  # SSE, with an event store
ODD = "odd-mcp.tools.svc.cluster.local"
SUPPORT_AGENT_HOST = "support-agent.support.svc.cluster.local"

SUPPORT = ("support", "support-agent")
INTERN = ("interns", "intern-agent")
ORCHESTRATOR = ("agents", "orchestrator")

# What each caller's lists hold, in the catalog's order (tests/harness/upstreams/mcp_catalog.py).
SUPPORT_SEES = {
    "tools": ["get_me", "list_issues", "get_issue", "comment_issue", "search_code", "search_issues"],
    "prompts": ["triage", "summarize"],
    "resources": ["repo://acme/readme", "repo://acme/changelog"],
    "templates": ["repo://acme/{path}"],
}
INTERN_SEES = {"tools": ["get_me"], "prompts": [], "resources": [], "templates": []}
DELEGATE_SEES = {"tools": ["get_me", "search_code"], "prompts": ["triage"], "resources": [], "templates": []}

POLICIES = f"""\
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: catalog}}
spec:
  kind: mcp
  hosts: [{CATALOG_SSE}, {CATALOG_JSON}, {CATALOG_RESUMABLE}]
  pathPrefix: /mcp
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: odd}}
spec:
  kind: mcp
  hosts: [{ODD}]
  pathPrefix: /mcp
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: support-agent}}
spec:
  principals: [{spiffe_id(*SUPPORT)}]
  hosts: [{SUPPORT_AGENT_HOST}]
  mission: Answers tickets; reads and searches issues, comments on acme's.
  mcp:
    - server: catalog
      tools: [get_me, list_issues, get_issue, "search_*"]
      prompts: [triage, summarize]
      resources: ["repo://acme/*"]
    - server: catalog
      tools: [comment_issue]
      when: 'mcp.tool.arguments.repo.startsWith("acme/")'
    - server: odd
      tools: [get_me, list_issues]
      prompts: [triage]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: intern-agent}}
spec:
  principals: [{spiffe_id(*INTERN)}]
  mission: Learns the ropes; may only ask who it is.
  mcp:
    - server: catalog
      tools: [get_me]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: orchestrator}}
spec:
  principals: [{spiffe_id(*ORCHESTRATOR)}]
  mission: Hands work to support-agent, which then may only look itself up, search code and triage.
  agents:
    - agent: support-agent
      grant:
        mcp: [{{server: catalog, tools: [get_me, search_code, create_issue], prompts: [triage]}}]
"""


def write_list_policy_set(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policies.yaml").write_text(POLICIES)
    return directory
