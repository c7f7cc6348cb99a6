"""Who may drive the dashboard (training/dashboard_access.py): the origin rule as a function, and a
real ``streamlit run dashboard.py`` on loopback answering raw WebSocket upgrades and sign-in
requests. (Launch / Stop / Delete refused without the token: tests/test_pages_*.py.)"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import REPO, child_env
from dashboard_server import serve_dashboard
from training.dashboard import access

OWN = access.LOOPBACK_HOSTS


# --- the rule ---------------------------------------------------------------------------------

@pytest.mark.parametrize("origin,host,allowed", [
    ("http://127.0.0.1:8501", "127.0.0.1:8501", True),
    ("http://localhost:8501", "localhost:8501", True),
    ("http://[::1]:8501", "[::1]:8501", True),
    ("http://localhost:8000", "127.0.0.1:8501", False),        # another local program's page
    ("http://127.0.0.1:8000", "127.0.0.1:8501", False),        # same host, another port
    ("https://127.0.0.1:8501.evil.example", "127.0.0.1:8501", False),
    ("http://evil.example", "127.0.0.1:8501", False),
    ("http://evil.example:8501", "evil.example:8501", False),   # DNS rebinding: a name that is not ours
    ("null", "127.0.0.1:8501", False),                          # sandboxed frame, file://
    (None, "127.0.0.1:8501", False),                            # not a browser
    ("http://127.0.0.1:8501", None, False),
    ("http://[bad", "127.0.0.1:8501", False),
])
def test_only_the_dashboards_own_origin_may_connect(origin, host, allowed) -> None:
    assert access.origin_allowed(origin, host, OWN) is allowed


def test_a_proxy_host_or_origin_is_allowed_only_when_configured() -> None:
    assert not access.origin_allowed("https://dash.team.org", "dash.team.org", OWN)
    assert access.origin_allowed("https://dash.team.org", "dash.team.org", OWN, allowed_patterns=["dash.team.org"])
    assert access.origin_allowed("https://dash.team.org", "dash.team.org", OWN, allowed_patterns=["*.team.org"])
    assert not access.origin_allowed("https://dash.team.org.evil.example", "dash.team.org.evil.example", OWN,
                                     allowed_patterns=["*.team.org"])
    # A proxy that rewrites Host to the dashboard's address: its public origin must be listed.
    assert not access.origin_allowed("https://dash.team.org", "127.0.0.1:8501", OWN)
    assert access.origin_allowed("https://dash.team.org", "127.0.0.1:8501", OWN,
                                 allowed_origins=["https://dash.team.org/"])


def test_a_short_dashboard_token_is_refused() -> None:
    with pytest.raises(access.TokenError, match="DASHBOARD_TOKEN must be at least 16"):
        access._token_from_env({access.TOKEN_ENV: "secret"})
    assert access._token_from_env({access.TOKEN_ENV: "x" * 16}) == "x" * 16
    assert access._token_from_env({}) is None


# --- a served dashboard -----------------------------------------------------------------------

def upgrade_status(port: int, origin: str | None, host: str | None = None) -> int:
    """The HTTP status a WebSocket upgrade to Streamlit's stream gets (101 = connected)."""
    lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Protocol: streamlit"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = sock.recv(4096)
    return int(head.split()[1])


def get(port: int, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    (tmp / "models").mkdir()
    with serve_dashboard(tmp / "models", tmp / "streamlit.log") as url:
        yield url


def test_served_dashboard_refuses_websockets_from_other_origins(served) -> None:
    port = int(served.rsplit(":", 1)[1])
    assert upgrade_status(port, f"http://127.0.0.1:{port}") == 101
    assert upgrade_status(port, f"http://localhost:{port}", host=f"localhost:{port}") == 101
    for origin in (f"http://localhost:{port + 1}", f"http://127.0.0.1:{port + 1}", "http://evil.example", None):
        assert upgrade_status(port, origin) == 403, origin
    assert upgrade_status(port, f"http://evil.example:{port}", host=f"evil.example:{port}") == 403


def test_sign_in_url_sets_an_http_only_cookie_and_drops_the_token(served) -> None:
    port = int(served.rsplit(":", 1)[1])
    assert len(served.token) >= 32
    response = get(port, f"/curves?exp=a&exp=b&token={served.token}")
    assert response.status == 303
    assert response.getheader("Location") == "/curves?exp=a&exp=b"
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith(f"{access.cookie_name(port)}={served.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # Never a redirect to another site, whatever the path looks like.
    assert get(port, f"//evil.example/x?token={served.token}").getheader("Location") == "/evil.example/x"


@pytest.mark.parametrize("query", ["token=wrong", "token=", "token={token}&token={token}"])
def test_a_wrong_token_gets_a_clear_refusal_and_no_cookie(served, query: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    response = get(port, "/?" + query.format(token=served.token))
    assert response.status == 403 and response.getheader("Set-Cookie") is None


def test_a_fixed_token_comes_from_the_environment(tmp_path: Path) -> None:
    token = "a-team-token-from-the-environment"
    with serve_dashboard(tmp_path, tmp_path / "streamlit.log", env={access.TOKEN_ENV: token}) as url:
        assert url.token == token


def test_a_short_environment_token_stops_the_server_with_one_line(tmp_path: Path) -> None:
    env = dict(child_env(), **{access.TOKEN_ENV: "short"})
    proc = subprocess.run([sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard.py"), "--server.port",
                           "0", "--server.headless", "true"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "dashboard: DASHBOARD_TOKEN must be at least 16 characters without surrounding spaces (it is the "
        "dashboard's password); unset it to get a random one"]
