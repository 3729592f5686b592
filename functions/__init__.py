"""Jan Server: OpenAI-compatible API areas served as Knative functions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("function")  # the distribution name func requires
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
