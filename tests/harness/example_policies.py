"""The checkout (REPO), its example policy set (EXAMPLES: `policies/`), and the callers and
hosts that set names.

Most unit tests decide against it, through the `example_policy` and `authorizer` fixtures in
tests/conftest.py; the request builders in `requests.py` default to its callers and hosts.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "policies"

SUPPORT = "spiffe://cluster.local/ns/support/sa/support-agent"
BILLING = "spiffe://cluster.local/ns/billing/sa/billing-agent"
ORCHESTRATOR = "spiffe://cluster.local/ns/agents/sa/orchestrator"
TRIAGE = "spiffe://cluster.local/ns/triage/sa/labeler"
GITHUB_HOST = "github-mcp.tools.svc.cluster.local"
BILLING_HOST = "billing-agent.billing.svc.cluster.local"
