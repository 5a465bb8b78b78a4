"""tracker's REST API: a Django REST framework app over the same core the notebook API calls."""
