"""Typed settings: a TOML file, overridden by ``DIGEST_*`` environment variables.

The file is ``config/digest.toml`` or the one named by ``DIGEST_CONFIG_FILE``. Nested keys use
``__`` in the environment (``smtp.host`` is ``DIGEST_SMTP__HOST``). A wrong value raises
:class:`SettingsError` naming the key, so start-up stops before anything is fetched or sent; so
does a ``DIGEST_*`` variable that names no setting (a typo would otherwise be ignored in silence).
A key that has moved (:data:`MOVED_KEYS`) is still read at its old place for one release, with a
warning naming the old key and the new one; given at both, the new one wins.

Relative paths (``data_dir``, ``smtp.password_file``, ``dkim.private_key_file``, the settings file
itself) are relative to the working directory digest runs in, wherever they are written, as in
every shell command: the example file's ``data_dir = "./data"`` beside ``config/`` keeps meaning
what it meant. ``digest status`` and ``serve``'s first log line show the absolute paths in use.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import logging
import os
import re
import secrets
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import (
    SettingsError as PydanticSettingsError,
)

from digest.errors import DataDirError, SettingsError, describe_os_error
from digest.paths import JOURNAL_FILE, LOCK_FILE, SECRET_KEY_FILE, STORE_FILE
from digest.retry import RetryPolicy

DEFAULT_CONFIG_FILE = Path("config/digest.toml")
# Old key -> new key: read at the old place until the next release (``lookback_days`` and the HTTP
# timeout govern every source, the web form and ``status``, not Hugging Face alone).
MOVED_KEYS = {
    "sources.hf_papers.lookback_days": "lookback_days",
    "sources.hf_papers.timeout_seconds": "http.timeout_seconds",
}

log = logging.getLogger(__name__)


def _http_base(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https:// (got {value!r})")
    return value.rstrip("/")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScheduleSettings(_Section):
    cron: str = "0 7 * * *"
    timezone: str = "UTC"
    misfire_grace_seconds: int = Field(default=3600, ge=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from digest.clock import cron_trigger

        try:
            cron_trigger(value, "UTC")
        except ValueError as exc:
            raise ValueError(f"not a crontab expression ({exc})") from exc
        return value


class SmtpSettings(_Section):
    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    from_address: str = "digest@localhost"
    timeout_seconds: float = Field(default=30.0, gt=0)
    # What the relay allows (unset: no limit); digests over a quota wait for the next cycle (digest.mail.quota).
    max_per_second: float | None = Field(default=None, gt=0)
    max_per_hour: int | None = Field(default=None, ge=1)
    max_per_day: int | None = Field(default=None, ge=1)
    # Waiting on "421/450 too many" replies draws on this, not on retry.send_budget_seconds.
    throttle_budget_seconds: float = Field(default=600.0, ge=0)
    # Parallel connections to the relay, and ESMTP PIPELINING (RFC 2920) where the server offers it.
    connections: int = Field(default=1, ge=1, le=32)
    pipelining: bool = True

    def resolved_password(self) -> str | None:
        """The password, read from ``password_file`` (a Docker secret) when that is set."""
        if self.password_file is not None:
            return read_secret_file(self.password_file, "smtp.password_file")
        return self.password.get_secret_value() if self.password else None


class HfPapersSettings(_Section):
    enabled: bool = True
    base_url: str = "https://huggingface.co"
    page_size: int = Field(default=50, ge=1, le=100)

    _base_url = field_validator("base_url")(_http_base)


class BouncesSettings(_Section):
    """Where bounces go (``address``: each digest's envelope sender becomes ``local+<token>@domain``)
    and the IMAP mailbox ``digest bounces`` reads them from (digest.mail.bounces)."""

    address: str | None = Field(default=None, pattern=r"^[^@\s+]+@[^@\s]+$")
    imap_host: str | None = None
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_security: Literal["ssl", "starttls", "none"] = "ssl"
    imap_user: str | None = None
    password_file: Path | None = None
    folder: str = "INBOX"
    soft_limit: int = Field(default=3, ge=1, le=100)  # soft bounces in a row that suspend

    def resolved_password(self) -> str | None:
        return None if self.password_file is None else read_secret_file(self.password_file, "bounces.password_file")


class DkimSettings(_Section):
    """DKIM signing, on when a private key is configured (a file, e.g. a Docker secret, or the value)."""

    selector: str | None = None
    domain: str | None = None  # unset: the domain of smtp.from_address
    private_key_file: Path | None = None
    private_key: SecretStr | None = None

    @model_validator(mode="after")
    def _selector_with_key(self) -> DkimSettings:
        if (self.private_key_file is not None or self.private_key is not None) and not self.selector:
            raise ValueError("dkim.selector is needed when a DKIM private key is configured")
        return self


ARXIV_CATEGORY = re.compile(r"^[a-z][a-z-]*(\.[A-Za-z][A-Za-z-]*)?$")  # cs.CV, astro-ph, astro-ph.CO, q-bio.NC
SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
ARXIV_MIN_POLITE_INTERVAL = 3.0


class ArxivSettings(_Section):
    """arXiv's category feeds (``{base_url}/rss/cs.CV+cs.LG``): each cycle reads the latest announcement."""

    enabled: bool = False
    base_url: str = "https://rss.arxiv.org"
    categories: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["cs.CV", "cs.LG"])
    include_replacements: bool = False
    min_interval_seconds: float = Field(default=ARXIV_MIN_POLITE_INTERVAL, ge=0)

    _base_url = field_validator("base_url")(_http_base)

    @field_validator("categories", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """Also accept ``"cs.CV+cs.LG"`` or ``"cs.CV, cs.LG"``, as people write them in arXiv URLs."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)  # a JSON list, as pydantic-settings takes lists from the environment
        if isinstance(value, str):
            return [part for part in re.split(r"[+,\s]+", value) if part]
        return value

    @field_validator("categories")
    @classmethod
    def _known_shape(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one arXiv category, e.g. cs.CV")
        for category in value:
            if not ARXIV_CATEGORY.match(category):
                raise ValueError(f"{category!r} is not an arXiv category such as cs.CV or astro-ph.CO")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _polite_to_arxiv(self) -> ArxivSettings:
        # arXiv's terms ask for at most one request every 3 seconds; only test servers may go faster.
        host = urlsplit(self.base_url).hostname or ""
        if (
            host == "arxiv.org" or host.endswith(".arxiv.org")
        ) and self.min_interval_seconds < ARXIV_MIN_POLITE_INTERVAL:
            raise ValueError(
                f"min_interval_seconds must be at least {ARXIV_MIN_POLITE_INTERVAL:g} for {host} (arXiv's terms of use)"
            )
        return self


class FeedSettings(_Section):
    """Any RSS 0.9x/1.0/2.0, Atom or JSON Feed. ``name`` labels its items and namespaces their ids."""

    name: str
    url: str
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        _http_base(value)
        return value.strip()  # as given: "/feed/" and "/feed" may be different resources

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SOURCE_NAME.match(value):
            raise ValueError(f"{value!r}: use 1-40 lowercase letters, digits, '-' or '_' (it labels items and rules)")
        return value


class SourcesSettings(_Section):
    hf_papers: HfPapersSettings = HfPapersSettings()
    arxiv: ArxivSettings = ArxivSettings()
    feeds: list[FeedSettings] = Field(default_factory=list)

    @field_validator("feeds")
    @classmethod
    def _unique_names(cls, value: list[FeedSettings]) -> list[FeedSettings]:
        seen = {"hf_papers", "arxiv"}
        for feed in value:
            if feed.name in seen:
                raise ValueError(f"feed name {feed.name!r} is used twice (each source needs its own name)")
            seen.add(feed.name)
        return value


class HttpSettings(_Section):
    """The one HTTP client every source fetches with."""

    timeout_seconds: float = Field(default=20.0, gt=0)


class RetrySettings(_Section):
    """Transient failures (network errors, HTTP 429/5xx, SMTP 4xx, dropped connections) are retried."""

    attempts: int = Field(default=5, ge=1, le=20)
    initial_delay_seconds: float = Field(default=1.0, gt=0)
    max_delay_seconds: float = Field(default=60.0, gt=0)
    fetch_budget_seconds: float = Field(default=300.0, ge=0)
    send_budget_seconds: float = Field(default=300.0, ge=0)

    def policy(self, budget: float) -> RetryPolicy:
        return RetryPolicy(self.attempts, self.initial_delay_seconds, self.max_delay_seconds, budget)


class WebSettings(_Section):
    """Where ``digest serve`` listens, and which reverse proxies may name the client.

    ``trusted_proxies`` (IPs or CIDRs) are the only peers whose ``X-Forwarded-For`` is read: from
    anyone else the header is a claim the client makes about itself, and the per-IP sign-up limit
    and the loopback-only details of ``/healthz`` would believe it. Empty (the default): ignored.

    ``metrics_allow`` (IPs or CIDRs) are the clients ``/metrics`` answers, decided the same way:
    loopback by default; add the Prometheus server's address (as the proxy names it, if it scrapes
    through one); empty: ``/metrics`` is off. ``access_log`` logs each request, tokens redacted.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    metrics_allow: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    access_log: bool = False

    @field_validator("trusted_proxies", "metrics_allow", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        """Also accept ``"172.18.0.0/16, 127.0.0.1"`` (the environment's usual form) or a JSON list."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [part for part in re.split(r"[,\s]+", value) if part]
        return value

    @field_validator("trusted_proxies", "metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or a CIDR such as 172.18.0.0/16") from None
        return value


class StoreSettings(_Section):
    """Where digest keeps its state: ``tinydb:`` (the default: ``digest.json`` in ``data_dir``) or a
    PostgreSQL database, ``postgresql://user@host:5432/database`` (a password in the URL works, but
    libpq's ``PGPASSWORD``/``~/.pgpass`` keep it out of the settings file)."""

    url: str = "tinydb:"

    @field_validator("url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        store_kind(value)  # a ValueError naming the value (its password hidden) if unknown
        return value.strip()


TINYDB_STORE = "tinydb:"
POSTGRES_SCHEMES = ("postgresql", "postgres")


def store_kind(url: str) -> Literal["tinydb", "postgresql"]:
    """Which backend ``store.url`` names; a :class:`ValueError` (one line, naming the value with any
    password hidden) if none."""
    if url.strip() == TINYDB_STORE:
        return "tinydb"
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in POSTGRES_SCHEMES and url[len(scheme) :].startswith("://"):
        return "postgresql"
    if scheme == "tinydb":
        raise ValueError(f"{redacted(url)!r}: write just 'tinydb:' (the TinyDB store is digest.json in data_dir)")
    raise ValueError(
        f"{redacted(url)!r} is not a store digest knows: use 'tinydb:' or 'postgresql://user@host/database'"
    )


_PASSWORD_PARAMETER = re.compile(r"([?&])([^=&#]*)=([^&#]*)")


def _is_password_key(key: str) -> bool:
    return unquote(key).lower().endswith("password")  # password, sslpassword, %70assword


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """``url`` as (``scheme://``, user info, the rest from the host on), read from the raw text:
    the last ``@`` ends the user info, so a password with ``/ ? # @`` in it is still found."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return None
    userinfo, _, host = rest.rpartition("@")
    return scheme + separator, userinfo, host


def redacted(url: str) -> str:
    """``url`` with its password, if any (``user:pw@``, ``?password=``, ``?sslpassword=``), replaced
    by ``***`` (for messages and logs)."""
    parts = _userinfo(url)
    if parts is not None and ":" in parts[1]:
        scheme, userinfo, host = parts
        url = f"{scheme}{userinfo.split(':', 1)[0]}:***@{host}"
    return _PASSWORD_PARAMETER.sub(
        lambda m: f"{m[1]}{m[2]}=***" if _is_password_key(m[2]) else m[0],
        url,
    )


def scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's error about ``url``) without ``url``'s passwords, as written, decoded,
    or in the pieces a driver that misreads an ``@`` in one quotes: a URL it cannot parse is
    echoed back in its error."""
    parts = _userinfo(url)
    written = [parts[1].split(":", 1)[1]] if parts is not None and ":" in parts[1] else []
    written += [m[3] for m in _PASSWORD_PARAMETER.finditer(url) if _is_password_key(m[2])]
    secrets = {*written, *map(unquote, written)}
    secrets |= {piece for secret in list(secrets) for piece in secret.split("@") if len(piece) >= 3}
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class Settings(BaseSettings):
    """Every setting digest reads. Defaults run a working demo with nothing configured."""

    model_config = SettingsConfigDict(
        env_prefix="DIGEST_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path("./data")
    public_url: str = "http://localhost:8080"
    secret_key: SecretStr | None = None
    retention_days: int = Field(default=30, ge=7)
    catchup_days: int = Field(default=14, ge=1, le=365)
    lookback_days: int = Field(default=2, ge=1, le=30)
    log_format: Literal["keyvalue", "json"] = "keyvalue"
    # What the emails (From name, subject, header, footer) and web pages call this service; the
    # sender name is the From display name, the site name when unset. No line breaks: a header.
    site_name: str = Field(default="Paper digest", max_length=60, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")
    sender_name: str | None = Field(default=None, max_length=60, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")
    schedule: ScheduleSettings = ScheduleSettings()
    smtp: SmtpSettings = SmtpSettings()
    dkim: DkimSettings = DkimSettings()
    bounces: BouncesSettings = BouncesSettings()
    sources: SourcesSettings = SourcesSettings()
    http: HttpSettings = HttpSettings()
    web: WebSettings = WebSettings()
    retry: RetrySettings = RetrySettings()
    store: StoreSettings = StoreSettings()

    _public_url = field_validator("public_url")(_http_base)

    @model_validator(mode="before")
    @classmethod
    def _read_moved_keys(cls, data: Any) -> Any:
        return move_old_keys(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _retention_covers_catch_up(self) -> Settings:
        """Papers listed before the retention horizon are never delivered again (that is what keeps
        "at most once" true after pruning), so the horizon must lie behind every day still fetched."""
        needed = self.catchup_days + self.lookback_days
        if self.retention_days <= needed:
            raise ValueError(
                f"retention_days ({self.retention_days}) must be more than catchup_days + lookback_days ({needed})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = config_file_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def resolved_secret_key(self) -> str:
        """The signing key: configured, or generated once into ``data_dir`` and kept there."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / SECRET_KEY_FILE
        try:
            if not path.is_file():
                self.data_dir.mkdir(parents=True, exist_ok=True)
                create_secret_file(path, secrets.token_urlsafe(48))
            return read_secret_file(path, "secret_key")
        except OSError as exc:  # a read-only or foreign data_dir: one line, not a traceback
            raise DataDirError(describe_os_error(exc, "keep the generated secret key", path)) from None


def create_secret_file(path: Path, key: str) -> None:
    """Write ``key`` to ``path`` whole, unless another process made the file first.

    Web replicas and workers starting together on a fresh shared ``data_dir`` all try: the key is
    written to a file of this process's own and linked into place, so a reader never sees a
    half-written key, and the first link wins (the others read it).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process's key is in place: keep it
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


_ABSENT = object()


def move_old_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (the merged file, environment and arguments) with each old key of :data:`MOVED_KEYS`
    taken to its new place, and one warning line for each old key found. Copies what it changes."""
    for old, new in MOVED_KEYS.items():
        data, value = _without(data, old.split("."))
        if value is _ABSENT:
            continue
        was, now = f"{old} ({env_name(old)})", f"{new} ({env_name(new)})"
        if _lookup(data, new.split(".")) is not _ABSENT:
            log.warning("settings: %s is ignored: %s is also set and wins; remove the old key", was, now)
        else:
            log.warning("settings: %s is now %s: rename it; the old name is read until the next release", was, now)
            data = _with(data, new.split("."), value)
    return data


def _lookup(data: Any, parts: list[str]) -> Any:
    """The value at ``parts`` (a section given as a model counts as holding all its keys)."""
    for part in parts:
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, dict) or part not in data:
            return _ABSENT
        data = data[part]
    return data


def _without(data: dict[str, Any], parts: list[str]) -> tuple[dict[str, Any], Any]:
    """A copy of ``data`` without the key at ``parts``, and its value (``_ABSENT`` if there was none)."""
    head, *rest = parts
    inner = data.get(head, _ABSENT)
    if not rest:
        return ({k: v for k, v in data.items() if k != head}, inner) if inner is not _ABSENT else (data, _ABSENT)
    if not isinstance(inner, dict):
        return data, _ABSENT
    smaller, value = _without(inner, rest)
    return ({**data, head: smaller}, value) if value is not _ABSENT else (data, _ABSENT)


def _with(data: dict[str, Any], parts: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``value`` at ``parts``, making the sections on the way."""
    head, *rest = parts
    if not rest:
        return {**data, head: value}
    inner = data.get(head)
    return {**data, head: _with(inner if isinstance(inner, dict) else {}, rest, value)}


def env_name(key: str) -> str:
    """The environment variable that sets ``key``: ``smtp.host`` is ``DIGEST_SMTP__HOST``."""
    return "DIGEST_" + key.replace(".", "__").upper()


def config_file_path() -> Path:
    return Path(os.environ.get("DIGEST_CONFIG_FILE") or DEFAULT_CONFIG_FILE)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings, turning every failure into one clear :class:`SettingsError`."""
    check_environment()
    path = config_file_path()
    if "DIGEST_CONFIG_FILE" in os.environ and not path.is_file():
        raise SettingsError(f"DIGEST_CONFIG_FILE: no such file {path}")
    if path.is_file():
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: cannot read: {exc}") from exc
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, path)) from exc
    except PydanticSettingsError as exc:  # e.g. DIGEST_SOURCES__FEEDS that is not valid JSON
        raise SettingsError(f"bad settings: {_unparsed_environment()}: {exc.__cause__ or exc}") from exc


def _unparsed_environment() -> str:
    """Name the ``DIGEST_*`` variables whose lists or tables (JSON in the environment) do not parse."""
    bad = []
    for key, value in sorted(os.environ.items()):
        if key.startswith("DIGEST_") and value.lstrip()[:1] in ("[", "{"):
            try:
                json.loads(value)
            except ValueError:
                bad.append(key)
    return (", ".join(bad) or "a DIGEST_* variable") + " must be JSON (a list or table)"


def _describe(exc: ValidationError, path: Path) -> str:
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        key = _key_for(".".join(str(part) for part in error["loc"]), message)
        env = env_name(key)
        given = error.get("input")
        shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
        secret = key.endswith(("password", "secret_key", "private_key", "store.url")) or key.startswith("dkim")
        if secret or repr(given) in message:
            shown = ""  # a secret, or a value the message already quotes
        if error["type"] == "extra_forbidden":
            nearest = difflib.get_close_matches(key, setting_paths(), n=1, cutoff=0.6)
            message = "unknown setting" + (f" (did you mean {nearest[0]}?)" if nearest else "")
        where = f"{path} or {env}" if path.exists() else env  # no settings file: only the variable
        where += "".join(f", or the old {old} / {env_name(old)}" for old, moved in MOVED_KEYS.items() if moved == key)
        lines.append(f"{key}: {message}{shown} [set in {where}]")
    return "bad settings: " + lines[0] if len(lines) == 1 else "bad settings:\n  " + "\n  ".join(lines)


def setting_paths(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every key as written in the file (``smtp.host``), sections included."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths += setting_paths(kind, f"{prefix}{name}.")
    return paths


def _key_for(located: str, message: str) -> str:
    """The key a validation error is about: a check across fields has no location (or only its
    section's), so the first key its message names is the one to show and set."""
    known = set(setting_paths())
    for word in re.findall(r"[a-z_]+(?:\.[a-z_]+)*", message):
        for candidate in (f"{located}.{word}" if located else word, word):
            if candidate in known and candidate.startswith(located):
                return candidate
    return located or "settings"


# Variables digest reads that are not settings. (Docker sets none with this prefix.)
OTHER_VARIABLES = ("DIGEST_CONFIG_FILE",)


def check_environment(environ: dict[str, str] | None = None) -> None:
    """Refuse a ``DIGEST_*`` variable that names no setting: ``DIGEST_PUBLIC_URLL=...`` would
    otherwise be ignored without a word, and the typo found only when an email has the wrong links."""
    known = {env_name(path) for path in [*setting_paths(), *MOVED_KEYS]} | set(OTHER_VARIABLES)
    variables = os.environ if environ is None else environ
    unknown = sorted(key for key in variables if key.upper().startswith("DIGEST_") and key.upper() not in known)
    if not unknown:
        return
    named = []
    for key in unknown:
        nearest = difflib.get_close_matches(key.upper(), sorted(known), n=1, cutoff=0.6)
        named.append(key + (f" (did you mean {nearest[0]}?)" if nearest else ""))
    plural = "s" if len(named) > 1 else ""
    raise SettingsError(
        f"unknown environment variable{plural} {', '.join(named)}: no setting has that name; "
        "fix or unset it (see config/digest.example.toml for every key)"
    )


def settings_file_description() -> str:
    """Which settings file is in use, absolute, for ``digest status`` and ``serve``'s first log line."""
    path = config_file_path()
    if path.is_file():
        return f"settings file {path.resolve()}"
    return f"no settings file ({path.absolute()} does not exist): defaults and DIGEST_* variables"


def in_container() -> bool:
    """Docker writes ``/.dockerenv``, Podman ``/run/.containerenv``: the hints then speak of mounts."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def data_dir_problem(data_dir: Path, write: bool) -> str | None:
    """What stops digest from using ``data_dir`` (None: nothing), in one line with the fix.

    Every command reads it; ``write`` also asks that it can be created and written, as the uid
    digest runs as (the usual container mistake: a bind-mounted ./data owned by the host user).
    """
    where = f"data_dir {data_dir}"
    for parent in (data_dir, *data_dir.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == data_dir else f"is under {parent}, which is a file"
            return f"{where} {what}, not a directory: point DIGEST_DATA_DIR (or data_dir) at a directory"
        if parent.exists():
            break
    if not write:
        return None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return describe_os_error(exc, "create the data directory", data_dir)
    uid, gid = os.getuid(), os.getgid()
    blocked = [data_dir] if not os.access(data_dir, os.W_OK | os.X_OK) else []
    for name in (STORE_FILE, JOURNAL_FILE, LOCK_FILE, SECRET_KEY_FILE):
        if (data_dir / name).exists() and not os.access(data_dir / name, os.R_OK | os.W_OK):
            blocked.append(data_dir / name)
    if not blocked:
        return None
    try:
        read_only = os.statvfs(data_dir).f_flag & os.ST_RDONLY
    except OSError:
        read_only = False
    if read_only:
        return f"{data_dir} is on a read-only file system: mount it read-write ({where})"
    first = blocked[0]
    if in_container():
        fix = f"on the host, chown {uid}:{gid} the directory mounted there (e.g. sudo chown -R {uid}:{gid} ./data)"
    else:
        fix = f"chown -R {uid}:{gid} {data_dir}, or point DIGEST_DATA_DIR at a directory of yours"
    return f"{first} is not writable by uid {uid}: {fix}"


def check_data_dir(data_dir: Path, write: bool) -> None:
    problem = data_dir_problem(data_dir, write)
    if problem:
        raise DataDirError(problem)


def read_secret_file(path: Path, key: str) -> str:
    """A secret kept in a file (a Docker secret): its one line, or a :class:`SettingsError` naming ``key``."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"{key}: {describe_os_error(exc, 'read', path)}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{key}: {path} is not UTF-8 text") from None
    if not text:
        raise SettingsError(f"{key}: {path} is empty")
    if "\n" in text:
        raise SettingsError(f"{key}: {path} holds more than one line; put the secret alone on one line")
    return text


def healthz_url(settings: Settings | None = None) -> str:
    """Where this machine's ``digest serve`` answers ``/healthz``, from ``web.host``/``web.port`` as
    configured (file or environment): the image's HEALTHCHECK asks here, so a port set only in the
    TOML file is followed too. A wildcard address is asked on loopback."""
    web = (settings or load_settings()).web
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(web.host, web.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{web.port}/healthz"
