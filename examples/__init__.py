"""Runnable examples of fastdtm and its Python SDK (clients/python)."""
