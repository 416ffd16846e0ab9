"""nebridge engine: configuration, plugin manager, pipelines, scheduler, store and CLI."""

from functools import cache


@cache
def _version() -> str:
    """The installed version; importlib.metadata (about 40 ms) is loaded on first use, so
    ``nebridge --help`` does not pay for it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nebridge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


def __getattr__(name: str) -> str:
    """``__version__`` and ``USER_AGENT`` (``nebridge/<version>``), computed when first read."""
    if name == "__version__":
        return _version()
    if name == "USER_AGENT":
        return f"nebridge/{_version()}"
    raise AttributeError(f"module 'daemon' has no attribute {name!r}")
