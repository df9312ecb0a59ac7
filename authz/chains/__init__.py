"""Delegation chain state (SPEC §5): signed tokens, immutable records, and the stores behind them.

The request-path step that uses them is `authz/check/delegation.py`; this package knows nothing of
policies, only of ids, MACs, records, expiry and revocation.
"""
