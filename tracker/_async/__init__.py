"""The async facade (``tracker.aio.*``): the same names and signatures, each one hop to the core."""
