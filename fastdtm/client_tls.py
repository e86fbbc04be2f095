"""The TLS context of an outgoing HTTPS client (branch calls, the alert webhook): whom it trusts, who it is.

Built once per client at start-up, from files the settings name, so that a file that cannot be used stops
the start (a settings error) instead of failing every call.
"""

from __future__ import annotations

import ssl


def client_context(ca_certs: str = "", certfile: str = "", keyfile: str = "") -> ssl.SSLContext | None:
    """None when nothing is set (the client then uses the system's CAs). `ca_certs`: a PEM bundle trusted
    *instead of* the system's, as Go's RootCAs and curl's --cacert; `certfile` (+ `keyfile`, unless the key
    is in it): the client certificate shown to servers that ask for one (mutual TLS). Raises ValueError
    naming the file that could not be used."""
    if not (ca_certs or certfile or keyfile):
        return None
    if keyfile and not certfile:
        raise ValueError("a client key needs its certificate")
    try:
        context = ssl.create_default_context(cafile=ca_certs or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"no CA certificate in {ca_certs!r}: {exc}") from None
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"not a certificate and its key in {certfile!r}: {exc}") from None
    return context
