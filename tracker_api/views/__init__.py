"""API views, one module per domain. Thin: parse, check the role, call tracker.services, shape."""
