"""The dashboard's pages over HTTP: sign-in (key or user), sessions, CSRF and origin checks,
rate-limited sign-in, headers, escaping, and nothing shown without a session or a key."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import requests
from serverkit import child_env
from trackkit import headers, ingest, make_run

XSS_NAME = '<script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">'
XSS_CONFIG = "<img src=x onerror=alert(1)>"
XSS_METRIC = '"><svg onload=alert(1)>'


@pytest.fixture
def project(sqlite_server):
    p = sqlite_server.quick_project()
    make_run(sqlite_server, p.key, "run-one", "first run", {"lr": 0.1}, {"loss": [1.0, 0.5]})
    return p


def signin_form(server, s: requests.Session) -> str:
    r = s.get(f"{server.url}/signin", timeout=30)
    assert r.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)


def sign_in(server, fields: dict, origin: str | None = "self", csrf="form"):
    s = requests.Session()
    token = signin_form(server, s)
    data = {"csrf": token if csrf == "form" else csrf, **fields}
    h = {"Origin": server.url} if origin == "self" else ({"Origin": origin} if origin else {})
    r = s.post(f"{server.url}/signin", data=data, headers=h, allow_redirects=False, timeout=30)
    return s, r


def test_without_a_session_or_key_a_page_shows_nothing_of_the_project(sqlite_server, project):
    for path in ("/", "/runs", "/runs/run-one", "/compare?run=run-one&run=x"):
        r = requests.get(sqlite_server.url + path, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin"), path
        assert "first run" not in r.text and project.name not in r.text
    for path in ("/ui/data/runs/run-one", "/ui/data/chart?key=loss&run=run-one"):
        r = requests.get(sqlite_server.url + path, timeout=30)
        assert r.status_code == 401 and "first run" not in r.text
    r = requests.get(sqlite_server.url + "/signin", timeout=30)
    assert project.name not in r.text and "first run" not in r.text


def test_every_page_accepts_a_bearer_key_and_refuses_a_wrong_one(sqlite_server, project):
    for path in ("/", "/runs", "/runs/run-one"):
        r = requests.get(sqlite_server.url + path, headers=headers(project.key), timeout=30)
        assert r.status_code == 200 and "first run" in r.text, path
    bad = requests.get(
        sqlite_server.url + "/runs", headers=headers("bk_0000000000000000_" + "x" * 43), timeout=30
    )
    assert bad.status_code == 401 and "first run" not in bad.text


def test_pages_are_sent_with_a_strict_policy(sqlite_server, project):
    r = requests.get(sqlite_server.url + "/runs/run-one", headers=headers(project.key), timeout=30)
    csp = r.headers["content-security-policy"]
    for part in ("default-src 'self'", "object-src 'none'", "frame-ancestors 'none'"):
        assert part in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert not re.search(r"<script>(?!\s*</script>)", r.text), "no inline script"
    assert not re.search(r"\son[a-z]+=", r.text), "no inline event handler"


def test_signing_in_with_a_key_gives_an_httponly_samesite_session(sqlite_server, project):
    s, r = sign_in(sqlite_server, {"api_key": project.key, "next": "/runs"})
    assert r.status_code == 303 and r.headers["location"] == "/runs"
    cookie = r.headers["set-cookie"]
    assert "bk_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    page = s.get(sqlite_server.url + "/runs", timeout=30)
    assert page.status_code == 200 and "first run" in page.text


def test_a_session_ends_when_its_key_is_revoked(sqlite_server, project):
    key = sqlite_server.keys().create_key(project.id).token
    s, r = sign_in(sqlite_server, {"api_key": key})
    assert s.get(sqlite_server.url + "/runs", allow_redirects=False, timeout=30).status_code == 200
    sqlite_server.keys().revoke_key(key)
    assert s.get(sqlite_server.url + "/runs", allow_redirects=False, timeout=30).status_code == 303


@pytest.mark.parametrize(
    "origin, csrf",
    [("self", "wrong-token"), ("self", ""), ("http://evil.example", "form"), (None, "form")],
    ids=["wrong-token", "no-token", "other-origin", "no-origin"],
)
def test_sign_in_refuses_a_forged_form(sqlite_server, project, origin, csrf):
    s, r = sign_in(sqlite_server, {"api_key": project.key}, origin=origin, csrf=csrf)
    assert r.status_code == 403 and "bk_session" not in r.headers.get("set-cookie", "")


def test_sign_out_needs_the_session_csrf_token(sqlite_server, project):
    s, _ = sign_in(sqlite_server, {"api_key": project.key})
    page = s.get(sqlite_server.url + "/runs", timeout=30).text
    token = re.search(
        r'id="signout-form">\s*<input type="hidden" name="csrf" value="([^"]+)"', page
    ).group(1)
    h = {"Origin": sqlite_server.url}
    for bad in ("", "nope"):
        r = s.post(
            sqlite_server.url + "/signout",
            data={"csrf": bad},
            headers=h,
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 403
    assert s.get(sqlite_server.url + "/runs", allow_redirects=False, timeout=30).status_code == 200
    r = s.post(sqlite_server.url + "/signout", data={"csrf": token}, headers={"Origin": "http://evil.example"},
               allow_redirects=False, timeout=30)  # fmt: skip
    assert r.status_code == 403
    r = s.post(
        sqlite_server.url + "/signout",
        data={"csrf": token},
        headers=h,
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303
    assert s.get(sqlite_server.url + "/runs", allow_redirects=False, timeout=30).status_code == 303


def test_a_user_created_by_the_admin_command_signs_in_to_their_project_only(sqlite_server, project):
    other = sqlite_server.quick_project()
    make_run(sqlite_server, other.key, "other-run", "not yours", {}, {"loss": [1.0]})
    name = f"alice-{project.id[:6]}"
    res = subprocess.run(
        [sys.executable, "-m", "benchkit", "server", "users", "create", name, "--project", project.name,
         "--password-stdin", *sqlite_server._flags()],
        input="correct horse battery\n", capture_output=True, text=True, env=child_env(), timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    from sqlalchemy import select

    from benchkit.server.db.accounts import users

    with sqlite_server.keys().db.read() as db:
        stored = db.execute(select(users.c.password_hash).where(users.c.username == name)).scalar()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored  # hashed only
    s, r = sign_in(sqlite_server, {"username": name, "password": "correct horse battery"})
    assert r.status_code == 303
    assert "first run" in s.get(sqlite_server.url + "/runs", timeout=30).text
    assert s.get(sqlite_server.url + "/runs/other-run", timeout=30).status_code == 404
    _, wrong = sign_in(sqlite_server, {"username": name, "password": "wrong password!!"})
    assert wrong.status_code == 401


def test_repeated_failed_sign_ins_are_rate_limited(sqlite_server, project):
    user = f"nobody-{project.id[:8]}"
    codes = [
        sign_in(sqlite_server, {"username": user, "password": "x" * 12})[1].status_code
        for _ in range(6)
    ]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    _, r = sign_in(sqlite_server, {"username": user, "password": "x" * 12})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_user_text_is_escaped_in_every_page(sqlite_server):
    p = sqlite_server.quick_project()
    make_run(
        sqlite_server, p.key, "xss-run", XSS_NAME, {"note": XSS_CONFIG}, {XSS_METRIC: [1.0, 2.0]}
    )
    line = [{"t": 9.0, "message": XSS_CONFIG + " in the log"}]
    assert ingest(sqlite_server, p.key, "xss-run", line, writer="console").status_code == 200
    for path in ("/", "/runs", "/runs/xss-run", "/compare?run=xss-run&run=xss-run"):
        html = requests.get(sqlite_server.url + path, headers=headers(p.key), timeout=30).text
        for raw in (
            XSS_NAME,
            XSS_CONFIG,
            XSS_METRIC,
            "<script>window.__xss",
            "<img src=x",
            "<svg onload",
        ):
            assert raw not in html, (path, raw)
    html = requests.get(
        sqlite_server.url + "/runs/xss-run", headers=headers(p.key), timeout=30
    ).text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt; in the log" in html  # the log, as text
    assert "\\u003csvg" in html  # the metric name in the page's JSON, escaped for HTML too


def test_a_checkpoint_downloads_as_an_attachment(sqlite_server, project):
    from benchkit.store.http import HttpStore

    store = HttpStore(sqlite_server.url, project.key)
    store.put("checkpoints/run-one/epoch-0001", b"checkpoint bytes")
    store.close()
    r = requests.get(
        sqlite_server.url + "/runs/run-one/checkpoints/epoch-0001",
        headers=headers(project.key),
        timeout=30,
    )
    assert r.content == b"checkpoint bytes"
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["content-security-policy"] == "sandbox"


def test_the_runs_table_shows_every_kind_of_value_as_text(sqlite_server):
    p = sqlite_server.quick_project()
    config = {"layers": [64, "<b>x</b>"], "flag": True, "lr": 0.000123456, "opt": None}
    make_run(sqlite_server, p.key, "kinds", "kinds", config, {"loss": [0.5]})
    html = requests.get(sqlite_server.url + "/runs", headers=headers(p.key), timeout=30).text
    cell = lambda col: re.search(rf'data-col="{re.escape(col)}">([^<]*)</td>', html).group(1)  # noqa: E731
    assert cell("config.layers") == "[64, &#34;&lt;b&gt;x&lt;/b&gt;&#34;]"
    assert (cell("config.flag"), cell("config.lr"), cell("config.opt")) == (
        "True",
        "0.00012346",
        "–",
    )
    assert cell("metric.loss") == "0.5" and "<b>x</b>" not in html
