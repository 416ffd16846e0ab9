"""Benchmarks of nebridge against the Next Engine sandbox (``python -m benchmarks``).

Not a test suite: the modules print figures. :mod:`benchmarks.runner` drives every
workload, :mod:`benchmarks.worker` is the measured daemon process, :mod:`benchmarks.naive`
the naive integration it is compared with and :mod:`benchmarks.latency` the file-to-shipped
latency of the real daemon.
"""
