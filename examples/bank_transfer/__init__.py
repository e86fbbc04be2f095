"""Money transfers between two banks, each a FastAPI service with its own PostgreSQL database, as a saga, a TCC
and a two-phase message through fastdtm (or Go DTM): `python -m examples.bank_transfer`."""
