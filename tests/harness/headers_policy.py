"""A policy whose Targets and rules set and remove request headers, two of them from secret files
(`%(key_a)s`, `%(key_b)s`: the paths of files holding KEY_A and KEY_B), for the tests of
`requestHeaders` and of what a reload carries."""

KEY_A, KEY_B = "sk-team-a-canary-1f2e3d", "sk-team-b-canary-9a8b7c"

POLICY = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: tools}
spec:
  kind: mcp
  hosts: [tools.local]
  requestHeaders:
    set: {x-caller: "{caller.principal}", x-tag: tools}
    remove: [x-debug]
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: web}
spec: {kind: egress, hosts: [api.example.com]}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: alice}
spec:
  mission: reads with her own tags
  principals: [spiffe://cluster.local/ns/alice/sa/alice]
  mcp:
    - server: tools
      tools: [read]
      requestHeaders:
        set:
          x-who: "{profile} {caller.namespace}/{caller.serviceAccount}"
          x-user: "{user.sub}"
          x-decision: "{decision_id}"
        remove: [x-caller]
  egress:
    - host: api.example.com
      requestHeaders: {set: {authorization: "Bearer {secret:%(key_a)s}"}}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: bob}
spec:
  mission: tries things in dry-run
  principals: [spiffe://cluster.local/ns/bob/sa/bob]
  mode: dry-run
  mcp:
    - server: tools
      tools: [read]
      requestHeaders: {set: {x-bob: "yes"}}
  egress:
    - host: api.example.com
      requestHeaders: {set: {authorization: "Bearer {secret:%(key_b)s}"}}
"""
