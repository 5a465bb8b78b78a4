"""The one core: plain synchronous functions over the ORM, one module per domain.

The notebook facades (``tracker.*``, ``tracker.aio.*``), the REST API and the commands all call
these; business rules live here and nowhere else. Each call is one unit of work.
"""
