"""A testing kit for nebridge plugin authors (and nebridge's own tests).

Installed with nebridge, it is a pytest plugin (the ``pytest11`` entry point ``nebridge``):
its fixtures give a running Next Engine sandbox, a configured installation in a temp folder
signed in to it, one pass of the real engine and helpers to drop WMS files. See the
"Testing your plugin" section of ``docs/plugins.md``. :mod:`daemon.testing.conformance` holds
the connector conformance suite. Importing this package costs nothing: the heavy parts load
when a fixture is first used.
"""
