"""TimeWarp: synthetic temporal-order data for Video-LLMs, built from FineVideo."""

__version__ = "0.1.0"
