"""Real upstream servers behind Envoy, each wrapped in a `RequestRecorder`."""

from .recorder import RequestRecorder, SeenRequest

__all__ = ["RequestRecorder", "SeenRequest"]
