"""TLS for listeners: one ``ssl.SSLContext`` per listener, reloadable while it serves.

A TLS listener keeps one *listening* context for its whole life (the asyncio server holds it).
Its SNI callback, which OpenSSL runs on every ClientHello whether or not the client names a
server, moves the handshake onto the *current* context: the one built from the files at start
or at the last successful :meth:`ListenerTLS.reload`. So a reload (SIGHUP) swaps in a whole new
context at once (certificate, key and CA store together: a CA removed from ``cafile`` is no
longer trusted, which loading files again into the same context could not do); handshakes from
then on use it, established connections keep theirs, and a reload that fails leaves the
previous context serving.

TLS 1.2 is the minimum (``tls-version: tlsv1.3`` raises it). Client certificates follow
Mosquitto: ``require-certificate: true`` fails the handshake of a client without a valid one
signed by ``cafile``/``capath``; otherwise a client may present one (verified when a CA is
configured, as amqtt does), and ``use-identity-as-username`` takes the user name from its CN
(:func:`peer_common_name`).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final

from ..config import ListenerConfig
from ..errors import ConfigError, ConfigIssue

__all__ = ["MIN_VERSIONS", "ListenerTLS", "build_context", "peer_common_name"]

MIN_VERSIONS: Final = {"tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}


class _Encrypted(Exception):
    """Raised by the password callback: the key needs a passphrase we do not have."""


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal and hang a daemon.
    raise _Encrypted


def _error(lc: ListenerConfig, key: str, problem: str) -> ConfigError:
    return ConfigError([ConfigIssue(f"listeners.{lc.name}.{key}", None, problem)])


def _readable(lc: ListenerConfig, key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise _error(lc, key, f"cannot read {path}: {exc.strerror or exc}") from None


def _load_chain(ctx: ssl.SSLContext, lc: ListenerConfig) -> None:
    """Load ``certfile`` and ``keyfile``, naming the key at fault when they do not load."""
    assert lc.certfile is not None and lc.keyfile is not None  # config validation sees to it
    cert, key = lc.certfile, lc.keyfile
    if b"-----BEGIN" not in _readable(lc, "certfile", cert):
        raise _error(lc, "certfile", f"{cert} holds no PEM certificate")
    key_pem = _readable(lc, "keyfile", key)
    if b"PRIVATE KEY-----" not in key_pem:
        raise _error(lc, "keyfile", f"{key} holds no PEM private key")
    try:  # is the certificate itself readable? (load_cert_chain's errors do not say which file)
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise _error(lc, "certfile", f"{cert} holds no valid certificate ({exc.reason or exc})"
                     ) from None
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        raise _error(lc, "keyfile", f"{key} is encrypted; the broker cannot ask for its "
                     "passphrase (decrypt it: openssl pkey -in KEY -out PLAIN.key)") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise _error(lc, "keyfile", f"{key} is not the private key of the certificate "
                         f"in {cert}") from None
        raise _error(lc, "keyfile", f"{key}: cannot load the private key "
                     f"({exc.reason or exc})") from None


def build_context(lc: ListenerConfig) -> ssl.SSLContext:
    """A server context for listener ``lc``; :class:`ConfigError` naming the listener key
    (``listeners.NAME.keyfile``, ...) when a file cannot be read or does not fit."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # secure ciphers, no compression
    ctx.minimum_version = MIN_VERSIONS[lc.tls_version]
    _load_chain(ctx, lc)
    if lc.cafile or lc.capath or lc.cadata:
        if lc.cafile:
            _readable(lc, "cafile", lc.cafile)
        try:
            ctx.load_verify_locations(cafile=lc.cafile, capath=lc.capath, cadata=lc.cadata)
        except ssl.SSLError as exc:
            key = "cafile" if lc.cafile else ("capath" if lc.capath else "cadata")
            raise _error(lc, key, f"no CA certificate could be loaded ({exc.reason or exc})"
                         ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED if lc.require_certificate else ssl.CERT_OPTIONAL
    return ctx


class ListenerTLS:
    """The TLS side of one listener: give :attr:`context` to the server once; :meth:`reload`
    makes the handshakes that follow use freshly loaded files."""

    __slots__ = ("_current", "config", "context")

    def __init__(self, config: ListenerConfig) -> None:
        self.config = config
        self.context = build_context(config)  # raises ConfigError
        self._current = self.context
        self.context.sni_callback = self._select

    def _select(self, conn: ssl.SSLObject, _server_name: str | None,
                ctx: ssl.SSLContext) -> None:
        if self._current is not ctx:
            conn.context = self._current

    def reload(self) -> None:
        """Read the certificate, key and CA files again; raise :class:`ConfigError` (and keep
        the current context) when they do not load."""
        self._current = build_context(self.config)


def peer_common_name(transport: asyncio.BaseTransport | None) -> str | None:
    """The first CN in the subject of the peer's verified certificate, or None (no TLS, no
    certificate, or none verified, or no CN), as Mosquitto's ``use_identity_as_username``."""
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName" and isinstance(value, str) and value:
                return value
    return None
