"""The numbered migrations of schema ``flowlens`` (``NNN_name.sql``), shipped as package data.

``flowlens migrate`` finds them through :func:`importlib.resources.files` on this package, so an
installed wheel migrates as well as a checkout does.
"""
