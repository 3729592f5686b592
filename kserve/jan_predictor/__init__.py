"""Jan Server's CPU predictor: an OpenAI-compatible KServe custom predictor over llama.cpp."""

from jan_predictor.app import create_app
from jan_predictor.settings import Settings

__all__ = ["Settings", "create_app"]
