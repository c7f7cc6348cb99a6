"""Who may drive the dashboard: its start-up token, and its own origin.

The dashboard can start, stop and delete on this host, so two rules hold, both on the server:

- Actions (launch, stop, delete) need the token. It is made when the server starts (or taken
  from ``DASHBOARD_TOKEN``) and printed once as a sign-in URL, ``http://127.0.0.1:8501/?token=...``,
  as Jupyter does. Opening that URL sets an HttpOnly cookie (``AccessMiddleware``) and redirects to
  the same page without the token; every action checks the cookie that came with the page's
  WebSocket (``pages/common.action_allowed``). Without it, pages only read.
- WebSockets are accepted only from the dashboard's own origin: the ``Origin`` header must name
  the host and port the request was sent to, and that host must be the dashboard's (loopback, the
  configured ``server.address`` / ``browser.serverAddress``, or ``server.allowedHosts``), unless the
  origin is listed in ``server.corsAllowedOrigins`` (a reverse proxy). Streamlit's own check lets
  any port of localhost in (a page served by another local program), hence this one.

Nothing here imports Streamlit at module level: the rules are plain functions; the middleware
reads Streamlit's config when a request comes.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from typing import Any, Awaitable, Callable, Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

TOKEN_ENV = "DASHBOARD_TOKEN"
TOKEN_PARAM = "token"                # ?token=... on the sign-in URL
SESSION_KEY = "dashboard_token"     # a session holding the token may act (how AppTest tests sign in)
MIN_TOKEN_CHARS = 16
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")

_token: str | None = None
_token_lock = threading.Lock()


class TokenError(ValueError):
    """``DASHBOARD_TOKEN`` is set but too short to be a secret."""


# --- the token ------------------------------------------------------------------------------

def server_token(environ: Mapping[str, str] | None = None) -> str:
    """This server's token: ``DASHBOARD_TOKEN`` when set, else a random one made once per process.

    The middleware and the pages run in the same process, so they agree on it."""
    global _token
    with _token_lock:
        if _token is None:
            _token = _token_from_env(os.environ if environ is None else environ) or secrets.token_urlsafe(32)
        return _token


def _token_from_env(environ: Mapping[str, str]) -> str | None:
    value = environ.get(TOKEN_ENV, "")
    if not value:
        return None
    if len(value) < MIN_TOKEN_CHARS or value != value.strip():
        raise TokenError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters without surrounding "
                         f"spaces (it is the dashboard's password); unset it to get a random one")
    return value


def token_matches(candidate: object) -> bool:
    """Whether ``candidate`` is this server's token (constant-time)."""
    return isinstance(candidate, str) and bool(candidate) and hmac.compare_digest(
        candidate.encode(), server_token().encode())


def cookie_name(port: int) -> str:
    """Cookies ignore ports: two dashboards on one host must not overwrite each other's."""
    return f"asvspoof_dashboard_token_{port}"


def sign_in_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?{urlencode({TOKEN_PARAM: token})}"


# --- the origin ---------------------------------------------------------------------------------

def hostname_of(host_header: str | None) -> str | None:
    """``127.0.0.1:8501`` -> ``127.0.0.1``; ``[::1]:8501`` -> ``::1``; None when unparsable."""
    if not host_header:
        return None
    try:
        return urlsplit("//" + host_header).hostname
    except ValueError:
        return None


def host_is_ours(host_header: str | None, own_hosts: Iterable[str], allowed_patterns: Iterable[str]) -> bool:
    """The Host header names this dashboard (not a DNS name rebound to 127.0.0.1 by a web page)."""
    name = hostname_of(host_header)
    if not name:
        return False
    if name in {h.lower() for h in own_hosts}:
        return True
    for pattern in (p.strip().lower().rstrip(".") for p in allowed_patterns):
        if pattern == "*" or pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def origin_allowed(origin: str | None, host_header: str | None, own_hosts: Iterable[str],
                   allowed_patterns: Iterable[str] = (), allowed_origins: Iterable[str] = ()) -> bool:
    """A WebSocket may connect: its page came from this dashboard (same host and port), or from
    an origin listed in ``server.corsAllowedOrigins``. No Origin (not a browser) is refused too."""
    if not origin or not host_header:
        return False
    if origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in allowed_origins}:
        return True
    try:
        origin_netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    return origin_netloc == host_header.lower() and host_is_ours(host_header, own_hosts, allowed_patterns)


# --- the ASGI middleware ----------------------------------------------------------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def streamlit_settings() -> dict[str, Any]:
    """The server options the rules need, read from Streamlit's config when a request comes."""
    from streamlit import config

    own = list(LOOPBACK_HOSTS)
    for option in ("server.address", "browser.serverAddress"):
        value = str(config.get_option(option) or "")
        if value not in WILDCARD_ADDRESSES and not value.startswith("unix://"):
            own.append(value)
    return {"own_hosts": own, "allowed_patterns": list(config.get_option("server.allowedHosts") or []),
            "allowed_origins": list(config.get_option("server.corsAllowedOrigins") or []),
            "port": int(config.get_option("server.port"))}


class AccessMiddleware:
    """Refuses WebSockets from other origins (HTTP 403 on the upgrade) and turns ``?token=`` into
    the sign-in cookie. Plain ASGI, so it sees WebSockets (Starlette's BaseHTTPMiddleware does not)."""

    def __init__(self, app: Callable[..., Awaitable[None]],
                 settings: Callable[[], dict[str, Any]] = streamlit_settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            headers = _headers(scope)
            settings = self.settings()
            if not origin_allowed(headers.get("origin"), headers.get("host"), settings["own_hosts"],
                                  settings["allowed_patterns"], settings["allowed_origins"]):
                await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
                return
        elif scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            if any(key == TOKEN_PARAM for key, _ in query):
                await _sign_in(scope, send, query, self.settings()["port"])
                return
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _sign_in(scope: Scope, send: Send, query: list[tuple[str, str]], port: int) -> None:
    """A valid ``?token=``: set the cookie, redirect to the same page without it. Else 403."""
    given = [value for key, value in query if key == TOKEN_PARAM]
    if len(given) != 1 or not token_matches(given[0]):
        await _respond(send, 403, [], b"Wrong dashboard token: open the sign-in URL the dashboard printed "
                                      b"when it started (.../?token=...).\n")
        return
    rest = urlencode([(k, v) for k, v in query if k != TOKEN_PARAM])
    # One leading slash: "//host/x" would send the browser to another site.
    path = "/" + (scope.get("root_path", "") + scope.get("path", "/")).lstrip("/")
    location = quote(path) + (f"?{rest}" if rest else "")
    cookie = f"{cookie_name(port)}={given[0]}; Path=/; HttpOnly; SameSite=Strict"
    await _respond(send, 303, [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1"))],
                   b"Signed in.\n")


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": body})
