"""The systemd notify protocol: READY=1, WATCHDOG=1, STATUS=... to $NOTIFY_SOCKET.

systemd passes a datagram socket path in NOTIFY_SOCKET when a unit has
`Type=notify`; a path starting with '@' names a socket in the abstract
namespace. With `WatchdogSec=`, systemd also passes WATCHDOG_USEC (and
WATCHDOG_PID) and kills the service when no WATCHDOG=1 arrives within that
many microseconds. Outside systemd both variables are unset and every call
here does nothing, so the node runs the same way from a shell.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class WatchdogError(ValueError):
    """NOTIFY_SOCKET or WATCHDOG_USEC contains a value the protocol does not allow."""


def _socket_address(value: str) -> str | bytes:
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of '@'.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise WatchdogError(
        f"NOTIFY_SOCKET={value!r} is neither an absolute path nor an abstract "
        "socket name starting with '@'; unset it outside systemd"
    )


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    text = environ.get("WATCHDOG_USEC")
    if not text:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        # The watchdog belongs to another process of the unit (a wrapper).
        return None
    try:
        usec = int(text)
    except ValueError:
        raise WatchdogError(
            f"WATCHDOG_USEC={text!r} is not a whole number of microseconds"
        ) from None
    if usec <= 0:
        raise WatchdogError(f"WATCHDOG_USEC={usec} must be above 0")
    return usec


class Notifier:
    """Sends notify messages to systemd, or nothing when not run by systemd.

    Args:
        address: the NOTIFY_SOCKET value; None disables every message.
        watchdog_usec: the WATCHDOG_USEC value; None disables `pet`.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self.watchdog_usec = watchdog_usec if self._address is not None else None
        self._lock = threading.Lock()
        self._last_pet = float("-inf")
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build a notifier from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID.

        Raises:
            WatchdogError: a variable is set to a value systemd never sets.
        """
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """True when a notify socket was given."""
        return self._socket is not None

    @property
    def pet_interval_s(self) -> float | None:
        """Seconds between WATCHDOG=1 messages: half the timeout, as systemd advises."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def ready(self, status: str) -> None:
        """Tell systemd that start-up is complete; `Type=notify` units wait for it."""
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        """Set the one-line status `systemctl status` shows."""
        self._send(f"STATUS={text}")

    def stopping(self) -> None:
        """Tell systemd that the service is shutting down on purpose."""
        self._send("STOPPING=1")

    def pet(self, *, force: bool = False) -> None:
        """Send WATCHDOG=1, at most once per `pet_interval_s` unless `force`.

        Call it from the frame loop: when the loop blocks (a hung camera
        read, a stuck inference), the messages stop and systemd restarts the
        service.
        """
        interval = self.pet_interval_s
        if interval is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_pet < interval:
                return
            self._last_pet = now
        self._send("WATCHDOG=1")

    def close(self) -> None:
        """Release the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as error:
            # systemd may be restarting; losing one message is harmless, the
            # next pet repeats it.
            logger.warning("cannot notify systemd at %r: %s", self._address, error)
