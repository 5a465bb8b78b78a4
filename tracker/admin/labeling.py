"""Django admin for labeling."""
