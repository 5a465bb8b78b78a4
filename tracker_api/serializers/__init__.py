"""Serializers, one module per domain. They shape and validate; the services decide."""
