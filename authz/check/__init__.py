"""The steps of a Check, one module each, in the order a request meets them.

1. `wire.py`, `request.py`: the CheckRequest's bytes into a typed `AuthzInput`.
2. `identity.py`: the caller's SPIFFE ID.
3. `classify.py` with `protocols/`: the target, and the MCP, A2A or HTTP action asked for.
4. `delegation.py`: the chain the caller acts under, and the one it hands on.
5. `decide.py`: every scope along the chain must allow the action.
6. `response.py`: the CheckResponse Envoy acts on and the body the agent reads.
7. `record.py`: the answer, handed to the audit log and the metrics.

`pipeline.py` composes them; `decision_cache.py` answers a request decided before. What a
step concludes is a `decision.Decision`; why it refuses is a constant of `authz/reasons.py`.
"""
