"""Mandate: an Envoy ext_authz service that holds AI agents to their mission profiles."""

__version__ = "0.1.0"
