"""fastdtm: a DTM-compatible distributed-transaction coordinator on Redis."""

__version__ = "0.1.0"
