"""nebridge engine: configuration, plugin manager, pipelines, scheduler, store and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nebridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

USER_AGENT = f"nebridge/{__version__}"
