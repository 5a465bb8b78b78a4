"""Django admin for datasets."""
