"""Django admin for runs."""
