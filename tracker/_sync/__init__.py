"""The sync facade (``tracker.*``), one module per domain. Thin: each entry point runs its body
through :func:`tracker._dispatch.call`, which picks inline or the database thread."""
