"""Test certificates made at test time with the ``openssl`` command (never stored in the repo).

* :class:`CertFactory` makes, in a folder: a CA (``ca.crt``/``ca.key``), server certificates
  for ``127.0.0.1`` and ``localhost`` (:meth:`CertFactory.server`) and client certificates with
  a given CN (:meth:`CertFactory.client`), each with the serial number it is asked for so a test
  can tell which certificate a broker served. EC P-256 keys: fast to make.
* :func:`peer_serial`: the serial number of the certificate a TLS server presents.

The ``cryptography`` package is not a dependency of this project, so the ``openssl`` CLI does
the work; :data:`HAVE_OPENSSL` lets a module skip when it is missing.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

HAVE_OPENSSL = shutil.which("openssl") is not None
_serials = itertools.count(1000)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path
    serial: int


def _openssl(*args: str | Path, cwd: Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{result.stderr}")


def _new_key(path: Path, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", path, cwd=cwd)


class CertFactory:
    """A throwaway CA in ``folder`` that signs server and client certificates."""

    def __init__(self, folder: Path, name: str = "ca") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = CertPair(folder / f"{name}.crt", folder / f"{name}.key", next(_serials))
        _new_key(self.ca.key, folder)
        ext = folder / f"{name}.ext"
        ext.write_text("[v3_ca]\nbasicConstraints=critical,CA:TRUE\n"
                       "keyUsage=critical,keyCertSign,cRLSign\n"
                       "subjectKeyIdentifier=hash\n")
        _openssl("req", "-x509", "-new", "-key", self.ca.key, "-out", self.ca.cert,
                 "-subj", f"/CN=mqttbroker test {name}", "-days", "2",
                 "-set_serial", str(self.ca.serial), "-config", ext, "-extensions", "v3_ca",
                 cwd=folder)

    def _sign(self, name: str, subject: str, extensions: str, serial: int | None) -> CertPair:
        pair = CertPair(self.folder / f"{name}.crt", self.folder / f"{name}.key",
                        next(_serials) if serial is None else serial)
        csr, ext = self.folder / f"{name}.csr", self.folder / f"{name}.ext"
        _new_key(pair.key, self.folder)
        _openssl("req", "-new", "-key", pair.key, "-out", csr, "-subj", subject,
                 cwd=self.folder)
        ext.write_text("basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
                       + extensions)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca.cert, "-CAkey", self.ca.key,
                 "-set_serial", str(pair.serial), "-days", "2", "-out", pair.cert,
                 "-extfile", ext, cwd=self.folder)
        csr.unlink()
        return pair

    def server(self, name: str = "server", serial: int | None = None) -> CertPair:
        """A server certificate for 127.0.0.1 and localhost."""
        return self._sign(name, "/CN=localhost",
                          "extendedKeyUsage=serverAuth\n"
                          "subjectAltName=IP:127.0.0.1,DNS:localhost\n", serial)

    def client(self, cn: str, name: str | None = None, serial: int | None = None) -> CertPair:
        """A client certificate whose subject is ``CN=cn``."""
        return self._sign(name or f"client-{cn}", f"/O=mqttbroker tests/CN={cn}",
                          "extendedKeyUsage=clientAuth\n", serial)


def client_context(cafile: Path, cert: CertPair | None = None) -> ssl.SSLContext:
    """A client context trusting ``cafile``, presenting ``cert`` when given."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def peer_serial(port: int, cafile: Path, cert: CertPair | None = None,
                timeout: float = 5.0) -> int:
    """Handshake with 127.0.0.1:port and return the serial of the certificate it presents."""
    ctx = client_context(cafile, cert)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return _serial_of(der)


def _serial_of(der: bytes) -> int:
    """The serial number of a DER certificate (``ssl`` decodes only verified peers' as dicts;
    this reads the TBSCertificate's INTEGER directly)."""

    def header(buf: bytes, at: int) -> tuple[int, int, int]:  # tag, content start, length
        tag, length = buf[at], buf[at + 1]
        at += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(buf[at:at + n], "big")
            at += n
        return tag, at, length

    _, body, _ = header(der, 0)  # Certificate SEQUENCE
    _, tbs, _ = header(der, body)  # TBSCertificate SEQUENCE
    tag, at, length = header(der, tbs)
    if tag == 0xA0:  # [0] EXPLICIT version
        tag, at, length = header(der, at + length)
    assert tag == 0x02, "expected the serial number INTEGER"
    return int.from_bytes(der[at:at + length], "big", signed=True)
