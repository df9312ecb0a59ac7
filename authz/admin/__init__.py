"""Mandate's admin API (`mandate.admin.v1alpha1`, proto/): the server `mandate serve` runs on its
admin listener, and the client `mandate status`, `chain … --server` and `explain --server` use."""
