"""`fastdtm serve | version`: argument parsing only; everything else lives in Settings and the app."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import uvicorn

from fastdtm import __version__, logs
from fastdtm.api.protocol_choice import uvicorn_http
from fastdtm.app import create_app
from fastdtm.auth import Tokens
from fastdtm.config import Settings, SettingsError
from fastdtm.errors import StoreUnavailable
from fastdtm.store.embedded import parse_sqlite_url
from fastdtm.store.sqlite_db import ensure_free

log = logging.getLogger("fastdtm")

# flag -> (Settings field, type, help)
_SERVE_FLAGS: dict[str, tuple[str, type, str]] = {
    "--store": (
        "store",
        str,
        "sqlite:///path.db (default ./fastdtm.db), redis[s]://[user:password@]host:port/db or "
        "redis[s]+cluster://[user:password@]h1:p1,h2:p2",
    ),
    "--host": ("host", str, "address to listen on (default 0.0.0.0)"),
    "--port": ("port", int, "HTTP port (default 36789, DTM's)"),
    "--grpc-port": ("grpc_port", int, "gRPC port of DTM's gRPC API, dtmgimp.Dtm (default 36790, DTM's; 0: off)"),
    "--workers": ("workers", int, "worker processes; each is a node of its own (default 1)"),
    "--retry-interval": ("retry_interval", float, "base retry interval, seconds (default 10)"),
    "--timeout-to-fail": ("timeout_to_fail", float, "default timeout of msg/tcc/xa, seconds (default 35)"),
    "--request-timeout": ("request_timeout", float, "timeout of one branch call, seconds (default 3)"),
    "--cron-interval": ("cron_interval", float, "the cron's tick: due work is claimed within one, seconds (default 1)"),
    "--lease-ttl": ("lease_ttl", float, "shard lease lifetime, seconds (default 10)"),
    "--node-heartbeat": ("node_heartbeat", float, "node heartbeat interval, seconds (default 1)"),
    "--max-clock-skew": (
        "max_clock_skew",
        float,
        "how far apart the nodes' clocks may be; a round stops calling branches this long before its hold "
        "on a transaction ends, seconds (default 0.5)",
    ),
    "--redis-connect-timeout": (
        "redis_connect_timeout",
        float,
        "opening a Redis connection, handshake included, seconds (default 5)",
    ),
    "--redis-reply-timeout": (
        "redis_reply_timeout",
        float,
        "a Redis connection whose oldest command waits this long for its reply is closed, seconds (default 10)",
    ),
    "--redis-retry-time": (
        "redis_retry_time",
        float,
        "how long a Redis command that was not run (failover, TRYAGAIN, CLUSTERDOWN, LOADING, refused "
        "connection) is tried again, seconds (default 2; 0: never)",
    ),
    "--redis-wait-replicas": (
        "redis_wait_replicas",
        int,
        "replicas that must confirm a transaction's write before it counts (Redis WAIT): 1 on a cluster with "
        "replicas loses nothing when a master crashes (default 0: asynchronous replication)",
    ),
    "--redis-wait-timeout": (
        "redis_wait_timeout",
        float,
        "how long a write waits for those replicas; if they do not confirm it, it fails, seconds (default 0.5)",
    ),
    "--shards": ("shards", int, "number of shards, fixed per deployment (default 256)"),
    "--key-prefix": ("key_prefix", str, "Redis key prefix (default fastdtm)"),
    "--finished-data-expire": ("finished_data_expire", float, "keep finished transactions, seconds (default 1 day)"),
    "--max-body-bytes": ("max_body_bytes", int, "largest accepted request body (default 1 MiB)"),
    "--max-header-bytes": (
        "max_header_bytes",
        int,
        "largest request line + headers; a larger head gets 431 and the connection is closed (default 64 KiB)",
    ),
    "--header-timeout": (
        "header_timeout",
        float,
        "a request's line and headers must arrive within this after its first byte (or after the connection "
        "opened), else the connection is closed, seconds (default 10)",
    ),
    "--body-timeout": (
        "body_timeout",
        float,
        "a request's body must arrive within this after its headers, else 408 and close, seconds (default 30)",
    ),
    "--keep-alive-timeout": (
        "keep_alive_timeout",
        float,
        "an idle keep-alive connection is closed after this, seconds (default 5)",
    ),
    "--drain-timeout": (
        "drain_timeout",
        float,
        "on SIGTERM, how long requests and rounds may take to finish before they are cut short and the "
        "rounds handed back; shard leases are released at once, seconds (default 10)",
    ),
    "--branch-max-reply-bytes": (
        "branch_max_reply_bytes",
        int,
        "bytes read of a branch's reply; a longer one is classified on what was read, its connection closed "
        "(default 64 KiB)",
    ),
    "--branch-max-idle": (
        "branch_max_idle",
        int,
        "idle keep-alive connections kept per branch host; more are closed when released (default 64)",
    ),
    "--branch-connect-timeout": (
        "branch_connect_timeout",
        float,
        "opening a connection for a branch call or the alert webhook (TCP, proxy CONNECT, TLS handshake), "
        "within the call's timeout, seconds (default 2)",
    ),
    "--branch-ca-certs": ("branch_ca_certs", str, "https branch calls trust these CAs (PEM) instead of the system's"),
    "--branch-certfile": (
        "branch_certfile",
        str,
        "client certificate (PEM) for branch servers that require one (mutual TLS); its key in it or --branch-keyfile",
    ),
    "--branch-keyfile": ("branch_keyfile", str, "the private key of --branch-certfile (PEM)"),
    "--metric-label-values": (
        "metric_label_values",
        int,
        "distinct values kept per client-chosen metric label (branch id, op); later ones count as other (default 64)",
    ),
    "--alert-webhook": ("alert_webhook", str, "URL POSTed to about branches that keep failing (default off)"),
    "--alert-retry-limit": ("alert_retry_limit", int, "doublings of the retry interval before alerting (default 3)"),
    "--alert-ca-certs": (
        "alert_ca_certs",
        str,
        "an https alert webhook is trusted by these CAs (PEM), not the system's",
    ),
    "--alert-certfile": ("alert_certfile", str, "client certificate (PEM) shown to the alert webhook (mutual TLS)"),
    "--alert-keyfile": ("alert_keyfile", str, "the private key of --alert-certfile (PEM)"),
    "--log-level": ("log_level", str, "debug, info, warning, error (default info)"),
    "--auth-file": (
        "auth_file",
        str,
        "a file of `token role` lines (roles: client, operator); every API call then needs a token, as Bearer "
        "or as the password of HTTP Basic; re-read on SIGHUP (default: no authentication, as DTM)",
    ),
    "--metrics-auth": ("metrics_auth", bool, "/api/metrics needs an operator token too"),
    "--branch-deny": (
        "branch_deny",
        str,
        "CIDRs and host names branch calls may not reach, comma-separated (default: link-local and "
        "unspecified addresses; add 127.0.0.0/8,::1/128 in production)",
    ),
    "--branch-allow": ("branch_allow", str, "when set, the only CIDRs and host names branch calls may reach"),
    "--branch-follow-redirects": (
        "branch_follow_redirects",
        bool,
        "follow a branch's redirect to another origin (same-origin redirects are always followed)",
    ),
    "--redact-headers": (
        "redact_headers",
        str,
        "more header names whose values /query, /all and logs hide (Authorization, Cookie and "
        "Proxy-Authorization always are)",
    ),
    "--ssl-certfile": ("ssl_certfile", str, "serve HTTPS with this certificate chain (PEM)"),
    "--ssl-keyfile": ("ssl_keyfile", str, "the private key of --ssl-certfile (PEM)"),
    "--ssl-ca-certs": ("ssl_ca_certs", str, "require client certificates signed by these CAs (PEM)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdtm", description="A DTM-compatible transaction coordinator.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a fastdtm node")
    for flag, (dest, kind, help_text) in _SERVE_FLAGS.items():
        if kind is bool:  # a switch: present means on (FASTDTM_*=1 does the same)
            serve.add_argument(flag, dest=dest, action="store_const", const=True, default=None, help=help_text)
        else:
            serve.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    overrides = {dest: getattr(args, dest) for dest, _, _ in _SERVE_FLAGS.values()}
    try:
        settings = Settings.from_env(**overrides)
        if settings.auth_file:  # a token file that cannot be used stops the start here, before any worker
            Tokens.read(settings.auth_file)
    except SettingsError as exc:
        print(f"fastdtm: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    return serve(settings)


def build() -> str:
    """Which build runs: pure Python, or with modules compiled by mypyc (docs/compiled.md)."""
    package = Path(__file__).parent
    compiled = [p for p in package.rglob("*") if p.name.endswith(tuple(EXTENSION_SUFFIXES))]
    return f"{len(compiled)} modules compiled" if compiled else "pure Python"


def serve(settings: Settings) -> int:
    if settings.embedded:
        try:
            ensure_free(parse_sqlite_url(settings.store))
        except StoreUnavailable as exc:
            log.error("%s", exc)
            return 2
    if settings.store_defaulted:
        log.info(
            "fastdtm %s (%s) on the embedded store %s (the default; --store redis://... to run several nodes)",
            __version__,
            build(),
            settings.store,
        )
    else:
        log.info("fastdtm %s (%s) on store %s", __version__, build(), settings.store_shown)
    common = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        # uvicorn's httptools protocol, with DTM's fixed routes served without ASGI (see there).
        "http": uvicorn_http(),
        "log_config": None,
        # Nothing here reads the client address, so uvicorn need not rewrite it from X-Forwarded-For
        # on every request.
        "proxy_headers": False,
        # The access log is off anyway (logs.configure); this also spares uvicorn building each line's
        # arguments (client address, quoted path) before the level check drops it.
        "access_log": False,
        "timeout_keep_alive": settings.keep_alive_timeout,
        # Requests still running this long after SIGTERM are cancelled (the lifespan then stops the rounds).
        "timeout_graceful_shutdown": settings.drain_timeout,
        **_https(settings),
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return 0
    # Worker processes rebuild the settings from the environment; each one is a node of its own.
    os.environ.update(settings.to_env())
    uvicorn.run("fastdtm.app:create_app_from_env", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
    return 0


def _https(settings: Settings) -> dict[str, object]:
    """uvicorn's TLS options: HTTPS when a certificate is set; with a CA, only clients whose certificate it
    signed get a TLS connection at all (mutual TLS: the health checks too). The server's context, and so
    the protocol, is the same for every worker process: TLS lives in the transport, below `uvicorn_http`."""
    if not settings.ssl_certfile:
        return {}
    options: dict[str, object] = {"ssl_certfile": settings.ssl_certfile, "ssl_keyfile": settings.ssl_keyfile}
    if settings.ssl_ca_certs:
        options |= {"ssl_ca_certs": settings.ssl_ca_certs, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options
