"""The policy set the delegation-chain e2e module runs Mandate with (SPEC §5).

Who may do what, chosen so that every chain rule has a case where it decides:

- `frontdesk` (public-facing) reads GitHub and may call `admin-agent` WITHOUT a grant, so
  admin-agent acting for it is held to frontdesk's own rules (no create_issue).
- `orchestrator` has no tools; its agents rule for `admin-agent` GRANTS create_issue (and
  GET api.github.com/zen), nothing else, so admin-agent acting for it may create issues but
  not even get_me. It grants `vault-agent` get_me.
- `admin-agent` may do everything on GitHub, GET api.github.com and call relay-a on its own.
- `vault-agent` only acts when delegated (requireChain) and only for orchestrator (acceptFrom).
- `outsider` may use GitHub's get_me and call admin-agent; it is the "third agent" that
  presents a token it was never handed.
- `relay-a..d` and `reentrant` all may call each other and get_me; `relay-d` caps chains it
  is in at 3 hops, `reentrant` may appear twice in one chain, the relays may not.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness.pki import spiffe_id

GITHUB_HOST = "github-mcp.tools.svc.cluster.local"
EGRESS_HOST = "api.github.com"

FRONTDESK = ("public", "frontdesk")
ORCHESTRATOR = ("ops", "orchestrator")
ADMIN = ("admin", "admin-agent")
VAULT = ("vault", "vault-agent")
OUTSIDER = ("other", "outsider")
RELAYS = ("relay-a", "relay-b", "relay-c", "relay-d", "reentrant")


def agent_host(profile: str) -> str:
    """The host an agent profile is reached by (its Kubernetes Service name)."""
    namespace = (
        "relays"
        if profile in RELAYS
        else {"frontdesk": "public", "orchestrator": "ops"}.get(profile, profile.split("-")[0])
    )
    return f"{profile}.{namespace}.svc.cluster.local"


def identity(profile: str) -> tuple[str, str]:
    """(namespace, service account) of the workload a profile governs."""
    fixed = {
        "frontdesk": FRONTDESK,
        "orchestrator": ORCHESTRATOR,
        "admin-agent": ADMIN,
        "vault-agent": VAULT,
        "outsider": OUTSIDER,
    }
    return fixed.get(profile, ("relays", profile))


AGENT_PROFILES = ("frontdesk", "orchestrator", "admin-agent", "vault-agent", *RELAYS)  # reachable as A2A agents
ADMIN_HOST = agent_host("admin-agent")
VAULT_HOST = agent_host("vault-agent")

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
metadata: {{name: github-api}}
spec:
  kind: egress
  hosts: [{EGRESS_HOST}]
"""


def _profile(name: str, mission: str, body: str) -> str:
    hosts = f"  hosts: [{agent_host(name)}]\n" if name in AGENT_PROFILES else ""
    return (
        "apiVersion: mandate.dev/v1alpha1\nkind: MissionProfile\n"
        f"metadata: {{name: {name}}}\nspec:\n  principals: [{spiffe_id(*identity(name))}]\n{hosts}"
        f"  mission: {mission}\n{body}"
    )


def _relay(name: str, delegation: str = "") -> str:
    agents = "".join(f"    - agent: {other}\n" for other in RELAYS)
    body = f"  mcp:\n    - server: github\n      tools: [get_me]\n  agents:\n{agents}{delegation}"
    return _profile(name, f"Relays work ({name}).", body)


PROFILES = [
    _profile(
        "frontdesk",
        "Talks to the public; reads issues, never writes.",
        """\
  mcp:
    - server: github
      tools: [get_me, list_issues]
  agents:
    - agent: admin-agent
    - agent: vault-agent
""",
    ),
    _profile(
        "orchestrator",
        "Plans work and delegates it; touches nothing itself.",
        """\
  agents:
    - agent: admin-agent
      grant:
        mcp: [{server: github, tools: [create_issue]}]
        egress: [{host: api.github.com, paths: [/zen], methods: [GET]}]
    - agent: vault-agent
      grant:
        mcp: [{server: github, tools: [get_me]}]
""",
    ),
    _profile(
        "admin-agent",
        "Administers the repositories.",
        """\
  mcp:
    - server: github
      tools: [get_me, list_issues, create_issue]
  agents:
    - agent: relay-a
  egress:
    - host: api.github.com
      paths: ["/zen", "/repos/*"]
      methods: [GET]
""",
    ),
    _profile(
        "vault-agent",
        "Opens the vault, only when the orchestrator asks.",
        """\
  mcp:
    - server: github
      tools: [get_me, list_issues]
  delegation:
    acceptFrom: [orchestrator]
    requireChain: true
""",
    ),
    _profile(
        "outsider",
        "Another team's agent.",
        """\
  mcp:
    - server: github
      tools: [get_me]
  agents:
    - agent: admin-agent
""",
    ),
    _relay("relay-a"),
    _relay("relay-b"),
    _relay("relay-c"),
    _relay("relay-d", "  delegation:\n    maxDepth: 3\n"),
    _relay("reentrant", "  delegation:\n    allowReentry: true\n"),
]


def settings(chain_ttl: str = "15m") -> str:
    return f"""\
apiVersion: mandate.dev/v1alpha1
kind: Settings
metadata: {{name: default}}
spec:
  trustDomains: [cluster.local]
  maxDepth: 5
  chainTTL: {chain_ttl}
"""


def write_chain_policy_set(directory: Path, chain_ttl: str = "15m") -> Path:
    """Write the chain policy set into `directory` (same profiles, any chainTTL) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "targets.yaml").write_text(TARGETS)
    (directory / "profiles.yaml").write_text("---\n".join(PROFILES))
    (directory / "settings.yaml").write_text(settings(chain_ttl))
    return directory
