"""Who is asking: API tokens (stored hashed), the user of a request, and the pages' sign-in
(`/login` sets the token cookie, `/logout` clears it).

Rules (the same for the JSON API and the Bokeh pages):

- With at least one token in the project's database, every request needs a valid token:
  `Authorization: Bearer <token>`, or the `labelloop_token` cookie that `/login` sets (open a
  webapp as `/webapps/<id>?token=<token>` once; the page redirects through `/login`, which
  sets the cookie and drops the token from the address). The user is the token's user.
- Without tokens, the user is the `X-Labelloop-User` header, else (pages only) the `?user=`
  argument or the `labelloop_user` cookie, else `anonymous`. Anyone who can reach the server
  can claim any name, which is why binding beyond loopback without tokens needs --insecure.

The mode (tokens required or not) is decided when the server starts. It changes only one
way while it runs: adding a token (an explicit action) switches a token-less server to
requiring tokens within `TOKEN_CHECK_SECONDS` (one database lookup per server that often, not
one per request), which is logged. Removing tokens never switches tokens off: a server that
required tokens keeps requiring them (a removed token is simply invalid) until restarted.

Roles (with tokens): each token has a role, `annotator` (labels), `reviewer` (also reviews)
or `admin` (also sees everyone's agreement figures); a user's tokens share one role
(`labelloop token add NAME --role R` sets it). Without tokens everyone is `admin`.
`role_of(engine, user)` is the one answer to "what may this user do"; a webapp route spec
with `"role": "reviewer"` is refused with 403 (`require_role`) before its handler runs.

`X-Labelloop-User` is percent-encoded UTF-8: `%` must start an escape (`%25` is a literal
`%`), so two spellings never name one user; raw non-ASCII header bytes must be UTF-8.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import html
import logging
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa
import tornado.web

from ..errors import LabelloopError, NotFoundError
from ..project import Project
from ..project.db import tokens_table, utc_iso, write_transaction

TOKEN_COOKIE = "labelloop_token"
# How often a server without tokens looks whether one was added (seconds).
TOKEN_CHECK_SECONDS = 0.5
USER_COOKIE = "labelloop_user"
USER_HEADER = "X-Labelloop-User"
ANONYMOUS = "anonymous"
MAX_USER_LENGTH = 100
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

log = logging.getLogger("labelloop.auth")


ROLES = ("annotator", "reviewer", "admin")  # each may do what the ones before it may
DEFAULT_ROLE = "annotator"
NO_TOKEN_ROLE = "admin"  # local use, without tokens: everyone may do everything


class AuthenticationError(LabelloopError):
    """The request needs a valid token."""

    status = 401


class RoleError(LabelloopError):
    """The user's role is lower than what the request needs."""

    status = 403


def check_role(role: str) -> str:
    """A role name as given, else a LabelloopError listing the roles."""
    if role not in ROLES:
        raise LabelloopError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def role_allows(role: str, needed: str) -> bool:
    """True when `role` may do what `needed` may (annotator < reviewer < admin)."""
    return ROLES.index(role) >= ROLES.index(needed)


def role_of(engine: sa.Engine, user: str) -> str:
    """The role of `user`: `admin` when the project has no token (everyone may do
    everything), else the role of the user's tokens (`annotator` for a user without one)."""
    t = tokens_table
    with engine.connect() as conn:
        # One lookup: the user's own token first, else any token (the project has tokens).
        row = conn.execute(sa.select(t.c.user, t.c.role)
                           .order_by(sa.case((t.c.user == user, 0), else_=1)).limit(1)).first()
    if row is None:
        return NO_TOKEN_ROLE
    return row.role if row.user == user else DEFAULT_ROLE


def _article(role: str) -> str:
    return "an" if role[0] in "aeiou" else "a"


def require_role(role: str, needed: str, user: str, what: str) -> None:
    """Raise RoleError (403) when `role` is lower than `needed`; `what` names the request."""
    if not role_allows(role, needed):
        raise RoleError(f"{user} is {_article(role)} {role}; {what} needs the {needed} role "
                        f"(labelloop token add {user} --role {needed})")


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_user_name(user: str) -> str:
    """A user name as given, stripped; refuses empty, too long or non-printable names."""
    name = (user or "").strip()
    if not name or len(name) > MAX_USER_LENGTH or not name.isprintable():
        raise LabelloopError(f"invalid user name {user[:MAX_USER_LENGTH]!r}: use 1 to "
                             f"{MAX_USER_LENGTH} printable characters")
    return name


def add_token(project: Project, user: str, role: str | None = None) -> str:
    """Create a token for `user`; returns it (only its hash is stored).

    `role` None keeps the role of the user's other tokens (`annotator` for a new user); a
    role given becomes the role of all the user's tokens (a user has one role).
    """
    user = check_user_name(user)
    if role is not None:
        check_role(role)
    value = secrets.token_urlsafe(32)
    t = tokens_table
    with write_transaction(project.engine) as conn:
        if role is None:
            role = conn.execute(sa.select(t.c.role).where(t.c.user == user).limit(1)) \
                .scalar() or DEFAULT_ROLE
        else:
            conn.execute(sa.update(t).where(t.c.user == user).values(role=role))
        conn.execute(sa.insert(t).values(user=user, sha256=hash_token(value), role=role,
                                         created=dt.datetime.now(dt.UTC)))
    return value


def list_tokens(project: Project) -> list[dict]:
    """Tokens (id, user, role, created), never their values."""
    t = tokens_table
    with project.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.user, t.c.role, t.c.created)
                            .order_by(t.c.id)).all()
    return [{"id": r.id, "user": r.user, "role": r.role, "created": utc_iso(r.created)}
            for r in rows]


def remove_tokens(project: Project, user: str, token_id: int | None = None) -> int:
    """Delete the tokens of `user` (or only token `token_id`); how many were removed."""
    t = tokens_table
    cond = t.c.user == user
    if token_id is not None:
        cond &= t.c.id == token_id
    with write_transaction(project.engine) as conn:
        n = conn.execute(sa.delete(t).where(cond)).rowcount
    if not n:
        which = f"token {token_id} of {user!r}" if token_id is not None else f"tokens of {user!r}"
        raise NotFoundError(f"no {which} (see `labelloop token list`)")
    return n


def tokens_configured(engine: sa.Engine) -> bool:
    """True when the project has at least one token (the server then requires one)."""
    with engine.connect() as conn:
        return conn.execute(sa.select(tokens_table.c.id).limit(1)).first() is not None


def user_for_token(engine: sa.Engine, token: str) -> str | None:
    """The user of a token, or None."""
    digest = hash_token(token)
    with engine.connect() as conn:
        row = conn.execute(sa.select(tokens_table.c.user, tokens_table.c.sha256)
                           .where(tokens_table.c.sha256 == digest)).first()
    # The lookup is by hash already; compare_digest keeps the final check constant-time.
    return row.user if row and hmac.compare_digest(row.sha256, digest) else None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    value = headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def decode_user_header(raw: str) -> str:
    """The user name of an `X-Labelloop-User` header: percent-encoded UTF-8, decoded strictly."""
    try:
        # Tornado hands header bytes over as Latin-1; the bytes themselves must be UTF-8.
        text = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise LabelloopError(f"{USER_HEADER} is not UTF-8: send the name percent-encoded "
                             "(e.g. encodeURIComponent(name))") from None
    if _BAD_ESCAPE.search(text):
        raise LabelloopError(f"{USER_HEADER} {text[:MAX_USER_LENGTH]!r} has a '%' that is not "
                             "an escape: the header is percent-encoded, so send '%' as '%25'")
    try:
        name = urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise LabelloopError(f"{USER_HEADER} {text[:MAX_USER_LENGTH]!r} does not decode to "
                             "UTF-8: percent-encode the UTF-8 bytes of the name") from None
    return check_user_name(name)


class Identity:
    """Resolves the user of a request against the project's tokens.

    `required` is decided at construction (server start): see the module's docstring.
    """

    def __init__(self, engine: sa.Engine, required: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self._required = tokens_configured(engine) if required is None else required
        self._lock = threading.Lock()
        self._clock = clock
        self._checked = clock()

    def required(self) -> bool:
        if self._required:
            return True
        # Only one way: a token added while running turns tokens on (never off). Why not on
        # every request: that lookup was a seventh of a label's time under load.
        now = self._clock()
        if now - self._checked < TOKEN_CHECK_SECONDS:
            return False
        self._checked = now
        if tokens_configured(self.engine):
            with self._lock:
                if not self._required:
                    self._required = True
                    log.warning("a token was added: this server now requires a token on "
                                "every request (until restarted without tokens)")
        return self._required

    def resolve(self, headers: Mapping[str, str], cookies: Mapping[str, str],
                arguments: Mapping[str, str] | None = None) -> tuple[str, str]:
        """`(user, how)`: how is bearer | cookie | header | argument | anonymous.

        Raises AuthenticationError when tokens are configured and none valid was given.
        `arguments` (query arguments) are only used for pages, never for the API.
        """
        if self.required():
            for how, token in (("bearer", bearer_token(headers)),
                               ("cookie", cookies.get(TOKEN_COOKIE))):
                if token:
                    user = user_for_token(self.engine, token)
                    if user is None:
                        raise AuthenticationError("invalid token: ask for a new one "
                                                  "(`labelloop token add USER`)")
                    return user, how
            raise AuthenticationError("this server requires a token: send 'Authorization: "
                                      "Bearer <token>' (pages: open them with ?token=<token>)")
        if headers.get(USER_HEADER):
            return decode_user_header(headers[USER_HEADER]), "header"
        for how, value in (("argument", (arguments or {}).get("user")),
                           ("cookie", cookies.get(USER_COOKIE))):
            if value:
                return check_user_name(value), how
        return ANONYMOUS, "anonymous"


# ---- the pages' sign-in: /login sets the token cookie, /logout clears it ----
def query_arguments(arguments: dict) -> dict[str, str]:
    """Last value of each query argument, as text."""
    out = {}
    for name, values in (arguments or {}).items():
        value = values[-1] if isinstance(values, list) and values else values
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            out[name] = value
    return out


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Labelloop: sign in</title>
<style>body{{font-family:sans-serif;max-width:30em;margin:4em auto}}input{{width:100%;padding:.4em}}
.err{{color:#b00}}</style></head><body><h1>Labelloop</h1><p>This server needs an access token
(ask for one: <code>labelloop token add YOUR-NAME</code>).</p><p class="err">{error}</p>
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" autofocus></label>
<p><button type="submit">Sign in</button></p></form></body></html>"""


def _safe_next(value: str | None) -> str:
    """A local path to go back to (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


class LoginHandler(tornado.web.RequestHandler):
    """`/login`: checks a token, stores it in an HttpOnly cookie, goes back to the page."""

    def initialize(self, identity: Identity) -> None:
        self.identity = identity

    def _login(self, token: str | None, target: str) -> None:
        if not self.identity.required():
            self.redirect(target)
            return
        if token:
            try:
                self.identity.resolve({"Authorization": f"Bearer {token}"}, {})
            except AuthenticationError as exc:
                self.set_status(401)
                self.finish(LOGIN_PAGE.format(error=html.escape(str(exc)),
                                              next=html.escape(target)))
                return
            self.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/",
                            secure=self.request.protocol == "https", expires_days=30)
            self.redirect(target)
            return
        self.finish(LOGIN_PAGE.format(error="", next=html.escape(target)))

    def get(self) -> None:
        self._login(self.get_argument("token", None), _safe_next(self.get_argument("next", None)))

    def post(self) -> None:
        self._login(self.get_body_argument("token", None),
                    _safe_next(self.get_body_argument("next", None)))


class LogoutHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.clear_cookie(TOKEN_COOKIE, path="/")
        self.redirect("/login")
