"""Stubs generated from proto/mandate/admin/v1alpha1/admin.proto by `python -m authz.admin.generate`."""
