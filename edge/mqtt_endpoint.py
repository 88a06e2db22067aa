"""Broker address and node credentials for the MQTT link.

Parses the broker URL, checks the TLS files and reads the password from a
file or the environment, so that a secret never sits in a config file or a
log line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ACCEPTED_URL_FORMS = (
    "mqtt://HOST[:PORT] (plain, default port 1883) or "
    "mqtts://HOST[:PORT] (TLS, default port 8883)"
)
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
PASSWORD_ENV = "SITLAB_MQTT_PASSWORD"


class EndpointError(ValueError):
    """A broker URL, TLS file or credential that cannot be used."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Host and port of the broker and whether the link uses TLS."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse `mqtt://host:port` or `mqtts://host:port`.

        Raises:
            EndpointError: naming the URL and the accepted forms.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise EndpointError(
                f"invalid broker URL {url!r} ({error}); use {ACCEPTED_URL_FORMS}"
            ) from error
        if parts.scheme not in DEFAULT_PORTS:
            raise EndpointError(
                f"broker URL {url!r} has scheme {parts.scheme!r}; use "
                f"{ACCEPTED_URL_FORMS}"
            )
        if not parts.hostname:
            raise EndpointError(
                f"broker URL {url!r} has no host; use {ACCEPTED_URL_FORMS}"
            )
        extra = parts.path.strip("/") or parts.query or parts.fragment
        if extra or parts.username or parts.password:
            raise EndpointError(
                f"broker URL {url!r} carries a path, query or credentials; use "
                f"{ACCEPTED_URL_FORMS} and pass credentials as username and "
                "password file"
            )
        if port == 0:
            raise EndpointError(
                f"broker URL {url!r} has port 0; use a port from 1 to 65535 in "
                f"{ACCEPTED_URL_FORMS}"
            )
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORTS[parts.scheme],
            tls=parts.scheme == "mqtts",
        )


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Files for a TLS link to the broker.

    Attributes:
        ca_file: PEM file with the site CA that signed the broker certificate;
            None trusts the system CA store.
        cert_file: PEM client certificate, for brokers with
            `require_certificate true`.
        key_file: PEM private key of `cert_file`.
        insecure: skip the check that the broker certificate names the host.
            The chain is still checked; use it only for brokers reached by an
            IP address that is missing from their certificate.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    def check(self) -> None:
        """Raise EndpointError when a file is missing or the key has no cert."""
        if (self.cert_file is None) != (self.key_file is None):
            raise EndpointError(
                "TLS cert_file and key_file go together; set both or neither "
                f"(cert_file={self.cert_file}, key_file={self.key_file})"
            )
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise EndpointError(
                    f"TLS {name} {path} not found; run "
                    "firmware-config/make-node-credentials.sh to create it"
                )


def read_password(password: str | None, password_file: Path | None) -> str | None:
    """Return the broker password from the argument, a file or the environment.

    The argument wins, then `password_file` (first line, trailing newline
    removed), then the SITLAB_MQTT_PASSWORD environment variable.

    Raises:
        EndpointError: when `password_file` cannot be read; the message names
            the file, never its content.
    """
    if password is not None:
        return password
    if password_file is not None:
        try:
            text = Path(password_file).read_text("utf-8")
        except OSError as error:
            raise EndpointError(
                f"cannot read MQTT password file {password_file}: "
                f"{error.strerror}; check the path and that the node user may "
                "read it"
            ) from error
        lines = text.splitlines()
        return lines[0] if lines else ""
    return os.environ.get(PASSWORD_ENV)
