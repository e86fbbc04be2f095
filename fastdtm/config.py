"""Settings: the one frozen value every component reads, built from flags and the environment.

This is the only module that reads environment variables. Each setting has a `FASTDTM_*` twin;
DTM's own names (`RETRY_INTERVAL`, `TIMEOUT_TO_FAIL`, ...) are accepted as a fallback so that a
deployment migrating from DTM keeps its environment.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from fastdtm.branch_policy import Rules
from fastdtm.branch_proxy import Proxies
from fastdtm.client_tls import client_context
from fastdtm.redaction import hide_url_passwords
from fastdtm.store.embedded import parse_sqlite_url
from fastdtm.store.redis_client import parse_url as parse_redis_url

DEFAULT_STORE: Final = "sqlite:///./fastdtm.db"

# setting name -> DTM's environment name, for users who migrate with their DTM config.
_DTM_ENV_NAMES: Final[Mapping[str, str]] = {
    "port": "HTTP_PORT",
    "grpc_port": "GRPC_PORT",
    "retry_interval": "RETRY_INTERVAL",
    "timeout_to_fail": "TIMEOUT_TO_FAIL",
    "request_timeout": "REQUEST_TIMEOUT",
    "cron_interval": "TRANS_CRON_INTERVAL",
    "finished_data_expire": "STORE_FINISHED_DATA_EXPIRE",
    "alert_webhook": "ALERT_WEB_HOOK",
    "alert_retry_limit": "ALERT_RETRY_LIMIT",
}
# setting name -> the environment names Go's net/http reads for it (the first one set wins), so that a
# deployment whose DTM reached its branches through a proxy keeps doing so.
_PROXY_ENV_NAMES: Final[Mapping[str, tuple[str, str]]] = {
    "http_proxy": ("HTTP_PROXY", "http_proxy"),
    "https_proxy": ("HTTPS_PROXY", "https_proxy"),
    "no_proxy": ("NO_PROXY", "no_proxy"),
}


#: Settings that must be > 0: every interval and timeout.
_POSITIVE: Final = (
    "retry_interval",
    "request_timeout",
    "cron_interval",
    "lease_ttl",
    "node_heartbeat",
    "header_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "redis_connect_timeout",
    "redis_reply_timeout",
    "redis_wait_timeout",
    "branch_connect_timeout",
)
#: Lower bounds of the other numbers.
_MINIMUM: Final[Mapping[str, int]] = {
    "max_clock_skew": 0,
    "timeout_to_fail": 0,
    "workers": 1,
    # Below 1 KiB an ordinary request head (or a branch's reply head) would not fit.
    "max_header_bytes": 1024,
    "branch_max_reply_bytes": 1024,
    "branch_max_idle": 0,
    "metric_label_values": 1,
    "max_body_bytes": 1,
    # 0 would leave every claimed transaction waiting for room that never comes.
    "cron_concurrency": 1,
    "alert_retry_limit": 0,
    # 0: a command that was not run fails at once instead of being sent again.
    "redis_retry_time": 0,
    "redis_wait_replicas": 0,
    # 0: a stopping node cuts its requests and rounds short at once (handing the rounds back).
    "drain_timeout": 0,
}
_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "shards": (1, 16384),
    "claim_batch": (1, 1000),
    "port": (0, 65535),
    "grpc_port": (0, 65535),
}


_BOOLEANS: Final[Mapping[str, bool]] = {"1": True, "true": True, "yes": True, "on": True} | {
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node needs to know; times are in seconds (fractions allowed, for tests)."""

    store: str = DEFAULT_STORE
    #: True when `store` was not given and the default was taken (the first log line says so).
    store_defaulted: bool = True
    host: str = "0.0.0.0"
    port: int = 36789
    #: DTM's gRPC API (dtmgimp.Dtm, with reflection and health) on this port; 0 serves no gRPC.
    grpc_port: int = 36790
    workers: int = 1
    #: Base retry interval of a transaction, and how long a cron claim holds a transaction.
    retry_interval: float = 10.0
    #: Default timeout of msg/tcc/xa transactions (sagas have none unless they ask).
    timeout_to_fail: float = 35.0
    #: Timeout of one outgoing branch call, unless the transaction sets its own.
    request_timeout: float = 3.0
    #: How often the cron polls each shard it owns.
    cron_interval: float = 1.0
    #: A shard lease lives this long without renewal; a dead node's shards move after it.
    lease_ttl: float = 10.0
    #: How often a node announces itself; it is considered gone after 3 missed beats.
    node_heartbeat: float = 1.0
    #: How far apart the nodes' clocks may be: a round sends no branch call this long before its hold on
    #: the transaction ends (docs/architecture.md, "Failure model"). Holds last at least twice this.
    max_clock_skew: float = 0.5
    #: The Redis client's limits (`resp.Timeouts`): opening a connection with its handshake; waiting for a
    #: reply before the connection is declared dead; retrying a command whose error says it did not run
    #: (a failover's redirections, TRYAGAIN, CLUSTERDOWN, LOADING, a refused connection).
    redis_connect_timeout: float = 5.0
    redis_reply_timeout: float = 10.0
    redis_retry_time: float = 2.0
    #: Replicas that must confirm a transaction's write before it counts (Redis `WAIT`), and for how long
    #: to wait: 0 keeps Redis's asynchronous replication, where a master's crash can lose its last writes.
    redis_wait_replicas: int = 0
    redis_wait_timeout: float = 0.5
    #: Number of shards; fixed for the life of a deployment (it decides where keys live).
    shards: int = 256
    key_prefix: str = "fastdtm"
    #: Finished transactions are kept this long for `query`, then expire.
    finished_data_expire: float = 86400.0
    max_body_bytes: int = 1 << 20
    #: Largest request line plus headers a client may send: a larger head is answered 431 and the connection
    #: closed. The parser buffers a head whole, so without it one client could fill the node's memory.
    max_header_bytes: int = 64 << 10
    #: A request's line and headers must all be in this long after its first byte (or after the connection
    #: opened, for the first request); else the connection is closed (a client that sends slowly or stops).
    header_timeout: float = 10.0
    #: A request's body must all be in this long after its headers: else 408 (if nothing was answered yet)
    #: and the connection is closed.
    body_timeout: float = 30.0
    #: On SIGTERM, how long a node lets its requests and rounds finish before it cuts them short and hands the
    #: rounds back (docs/deploy.md, "Stopping"); its leases are released at once.
    drain_timeout: float = 10.0
    #: An idle keep-alive connection is closed after this long (uvicorn's `timeout_keep_alive`).
    keep_alive_timeout: float = 5.0
    #: Bytes read of a branch's reply body (and of its headers): a longer reply is classified on what was
    #: read and its connection closed. DTM keeps only a short excerpt of a reply anyway.
    branch_max_reply_bytes: int = 64 << 10
    #: Idle keep-alive connections kept per branch origin (scheme, host, port); one released beyond is closed.
    branch_max_idle: int = 64
    #: Opening a connection for a branch call or the alert webhook (TCP, a proxy's CONNECT, the TLS handshake),
    #: within the call's own timeout: a host that never answers costs this, not the whole request timeout.
    branch_connect_timeout: float = 2.0
    #: HTTPS branch calls: a CA bundle trusted instead of the system's, and a client certificate (and its key,
    #: unless the certificate file holds it) for branch servers that require one (mutual TLS).
    branch_ca_certs: str = ""
    branch_certfile: str = ""
    branch_keyfile: str = ""
    #: The same for the alert webhook, apart: a chat or paging service is not a branch, and usually one the
    #: system's CAs vouch for.
    alert_ca_certs: str = ""
    alert_certfile: str = ""
    alert_keyfile: str = ""
    #: Proxies of branch calls and the alert webhook, from HTTP_PROXY, HTTPS_PROXY and NO_PROXY (or their lower
    #: case names) as Go's net/http reads them (fastdtm/branch_proxy.py); "" = direct.
    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""
    #: Distinct values a metric label that clients choose (a TCC branch id, a workflow op) keeps: the first
    #: ones are kept, later ones are counted as "other" (docs/metrics.md).
    metric_label_values: int = 64
    #: How many due transactions one claim takes from a shard, and how many run at once.
    claim_batch: int = 64
    cron_concurrency: int = 128
    #: POSTed to when a branch's retry interval has doubled `alert_retry_limit` times ("" = off).
    alert_webhook: str = ""
    alert_retry_limit: int = 3
    #: Security (docs/security.md). A file of `token role` lines: when set, every API call but the health
    #: checks needs a token (Bearer, or HTTP Basic with the token as password); re-read on SIGHUP.
    auth_file: str = ""
    #: `/api/metrics` asks for an operator token too (when `auth_file` is set).
    metrics_auth: bool = False
    #: Where branch calls may not go (CIDRs and host names, comma-separated): link-local (the cloud
    #: metadata address) and the unspecified addresses by default. `branch_allow`, when set: only there.
    branch_deny: str = "169.254.0.0/16,fe80::/10,0.0.0.0/32,::/128"
    branch_allow: str = ""
    #: Follow a branch's redirect to another origin (scheme, host, port); same-origin ones are followed.
    branch_follow_redirects: bool = False
    #: Header names, besides Authorization, Cookie and Proxy-Authorization, whose values `/query`, `/all`
    #: and logs do not show (comma-separated).
    redact_headers: str = ""
    #: HTTPS: the server's certificate chain and key (PEM), and a CA bundle whose client certificates it
    #: asks for and accepts (optional).
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_ca_certs: str = ""
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    log_level: str = "info"

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise SettingsError(f"Setting '{name}' must be > 0, got {getattr(self, name)!r}.")
        for name, least in _MINIMUM.items():
            if getattr(self, name) < least:
                raise SettingsError(f"Setting '{name}' must be >= {least}, got {getattr(self, name)!r}.")
        for name, (least, most) in _RANGES.items():
            if not least <= getattr(self, name) <= most:
                raise SettingsError(f"Setting '{name}' must be within {least}..{most}, got {getattr(self, name)!r}.")
        for name in ("branch_deny", "branch_allow"):
            try:
                Rules.parse(getattr(self, name), name)
            except ValueError as exc:
                raise SettingsError(f"Setting '{name}': {exc}.") from None
        if self.grpc_port and self.grpc_port == self.port:
            raise SettingsError(f"Settings 'port' and 'grpc_port' are both {self.port}: give gRPC a port of its own.")
        self._check_store()
        self._check_https()
        self._check_outgoing()

    def _check_https(self) -> None:
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise SettingsError("Settings 'ssl_certfile' and 'ssl_keyfile' go together: give both or neither.")
        if self.ssl_ca_certs and not self.ssl_certfile:
            raise SettingsError(
                "Setting 'ssl_ca_certs' (client certificates) needs HTTPS: 'ssl_certfile' and 'ssl_keyfile'."
            )
        if not self.ssl_certfile:
            return
        for name in ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs"):
            self._check_readable(name)
        # Loaded here as uvicorn will load them, so that a file that is not PEM, or a key that does not
        # match its certificate, is said at once rather than as a traceback of a failed start.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        except ssl.SSLError as exc:
            raise SettingsError(
                f"Settings 'ssl_certfile' and 'ssl_keyfile': not a certificate and its key: {exc}"
            ) from None
        try:
            if self.ssl_ca_certs:
                context.load_verify_locations(self.ssl_ca_certs)
        except ssl.SSLError as exc:
            raise SettingsError(f"Setting 'ssl_ca_certs': no CA certificate in {self.ssl_ca_certs!r}: {exc}") from None

    def _check_outgoing(self) -> None:
        """The proxies and the client TLS files of branch calls and the webhook, loaded as the node will."""
        try:
            self.proxies()
        except ValueError as exc:
            raise SettingsError(f"Setting {hide_url_passwords(str(exc))}.") from None
        for prefix in ("branch", "alert"):
            names = (f"{prefix}_ca_certs", f"{prefix}_certfile", f"{prefix}_keyfile")
            for name in names:
                self._check_readable(name)
            try:
                self.client_tls(prefix)
            except ValueError as exc:
                raise SettingsError(f"Settings {', '.join(repr(n) for n in names)}: {exc}.") from None

    def proxies(self) -> Proxies | None:
        """The proxy rules of branch calls and the webhook; None: every connection is direct."""
        return Proxies.parse(self.http_proxy, self.https_proxy, self.no_proxy)

    def client_tls(self, prefix: str) -> ssl.SSLContext | None:
        """The TLS context of the `branch` or `alert` client; None: the system's CAs, no client certificate."""
        files = (
            getattr(self, f"{prefix}_ca_certs"),
            getattr(self, f"{prefix}_certfile"),
            getattr(self, f"{prefix}_keyfile"),
        )
        return client_context(*files)

    def _check_readable(self, name: str) -> None:
        path = getattr(self, name)
        try:
            if path:
                with open(path, "rb"):
                    pass
        except OSError as exc:
            raise SettingsError(f"Setting '{name}': cannot read {path!r}: {exc.strerror}") from None

    def _check_store(self) -> None:
        if not self.embedded:
            if not self.store.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")):
                raise SettingsError(
                    "Setting 'store' must be a sqlite:///path, redis[s]:// or redis[s]+cluster:// URL, "
                    f"got {self.store_shown!r}."
                )
            try:
                tls = parse_redis_url(self.store).tls
                if tls is not None:
                    tls.context()  # a bad CA or client certificate is a setting error, not a failed start-up
            except ValueError as exc:
                raise SettingsError(f"Setting 'store': {str(exc).replace(self.store, self.store_shown)}") from None
            return
        try:
            parse_sqlite_url(self.store)
        except ValueError as exc:
            raise SettingsError(f"Setting 'store': {exc}") from None
        if self.workers > 1:
            raise SettingsError(
                "The embedded store (sqlite://) serves one node: run --workers 1, or use Redis for several."
            )

    @property
    def store_shown(self) -> str:
        """The store URL for logs: its password replaced by `***`."""
        parts = urlsplit(self.store)
        if parts.password is None:
            return self.store
        user, _, hosts = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{hosts}"))

    @property
    def embedded(self) -> bool:
        """The single-node SQLite store (the default) rather than Redis."""
        return self.store.startswith("sqlite:")

    @property
    def shard_look(self) -> float:
        """The longest an owned shard goes without a claim. Any write that schedules something sooner than
        `retry_interval` from its own clock wakes the shard (`Store.wake_counts`); one that schedules it later,
        after this look, is seen by the next look before it is due (clocks up to `max_clock_skew` apart)."""
        return max(self.cron_interval, self.retry_interval - self.max_clock_skew)

    @property
    def lease_renew(self) -> float:
        """Leases are renewed three times per TTL so that one slow renewal does not lose them."""
        return self.lease_ttl / 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `FASTDTM_*` variables (then DTM's names), with explicit overrides on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "store_defaulted":
                continue
            raw = env.get(f"FASTDTM_{f.name.upper()}")
            if raw is None and f.name in _DTM_ENV_NAMES:
                raw = env.get(_DTM_ENV_NAMES[f.name])
            for name in _PROXY_ENV_NAMES.get(f.name, ()) if raw is None else ():
                raw = env.get(name) or None
                if raw is not None:
                    break
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["store_defaulted"] = "store" not in values
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The `FASTDTM_*` variables that rebuild these settings (worker processes read them)."""
        out = {f"FASTDTM_{f.name.upper()}": str(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out.pop("FASTDTM_STORE_DEFAULTED")
        out.pop("FASTDTM_NODE_ID")  # every worker process is a node of its own
        return out


def _convert(name: str, type_name: object, raw: str) -> Any:
    kind = str(type_name)
    if kind == "bool":
        if raw.lower() not in _BOOLEANS:
            raise SettingsError(f"Setting '{name}' has value {raw!r}. Not one of {', '.join(_BOOLEANS)}.")
        return _BOOLEANS[raw.lower()]
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise SettingsError(f"Setting '{name}' has value {raw!r}. Not a valid {kind}.") from None
    return raw
