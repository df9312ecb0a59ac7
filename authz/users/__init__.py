"""The human behind the agent (SPEC §10): issuers, their keys, and verified users."""
