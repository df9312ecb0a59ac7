"""The policy set the e2e suite runs Mandate with, written to a temporary directory.

Small on purpose: one MCP server, one agent, one plain-HTTP service, and three callers
whose rights differ in exactly the ways the tests probe.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness.pki import spiffe_id

GITHUB_HOST = "github-mcp.tools.svc.cluster.local"
BILLING_HOST = "billing-agent.billing.svc.cluster.local"
STATUS_HOST = "status-page.ops.svc.cluster.local"

SUPPORT = ("support", "support-agent")
BILLING = ("billing", "billing-agent")
INTERN = ("interns", "intern-agent")
NOBODY = ("unknown", "nobody")

SUPPORT_ID = spiffe_id(*SUPPORT)
BILLING_ID = spiffe_id(*BILLING)
INTERN_ID = spiffe_id(*INTERN)

TARGETS = f"""\
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: github}}
spec:
  kind: mcp
  principals: [spiffe://cluster.local/ns/tools/sa/github-mcp]
  hosts: [{GITHUB_HOST}]
  pathPrefix: /mcp
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: billing-db}}
spec:
  kind: mcp
  hosts: [billing-db-mcp.billing.svc.cluster.local]
  pathPrefix: /mcp
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: status-page}}
spec:
  kind: http
  hosts: [{STATUS_HOST}]
"""

PROFILES = f"""\
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: support-agent}}
spec:
  principals: [{SUPPORT_ID}]
  mission: Answers customer tickets; reads issues, never writes.
  mcp:
    - server: github
      tools: [get_me]
      resources: ["repo://acme/*"]
      prompts: [triage]
    - server: github
      tools: [list_issues]
      when: 'mcp.tool.arguments.repo.startsWith("acme/")'
  agents:
    - agent: billing-agent
      methods: [SendMessage, SendStreamingMessage, GetTask]
  http:
    - target: status-page
      paths: ["/api/*"]
      methods: [GET]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: billing-agent}}
spec:
  principals: [{BILLING_ID}]
  hosts: [{BILLING_HOST}]
  mission: Handles billing questions; looks up invoices.
  mcp:
    - server: billing-db
      tools: [lookup_invoice]
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: intern-agent}}
spec:
  principals: [{INTERN_ID}]
  mission: Learns the ropes; may only ask GitHub who it is.
  mcp:
    - server: github
      tools: [get_me]
"""

SETTINGS = """\
apiVersion: mandate.dev/v1alpha1
kind: Settings
metadata: {name: default}
spec:
  trustDomains: [cluster.local]
"""


def write_policy_set(directory: Path) -> Path:
    """Write the suite's policy set into `directory` and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "targets.yaml").write_text(TARGETS)
    (directory / "profiles.yaml").write_text(PROFILES)
    (directory / "settings.yaml").write_text(SETTINGS)
    return directory
