"""DiSRouter: distributed self-routing LLM agents."""
__version__ = "0.1.0"
