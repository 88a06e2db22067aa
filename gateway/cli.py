"""`sitlab-gateway` command line: run, check-config, migrate, token, user."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from gateway.api import create_app
from gateway.auth import ROLES, AuthError, create_token, set_user
from gateway.config import ConfigError, GatewayConfig, load_config, parse_config
from gateway.service import Gateway
from gateway.store import StoreError, open_database

logger = logging.getLogger("gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitlab-gateway",
        description="Ingest SITLab node messages from MQTT and serve them over HTTP.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", type=Path, help="YAML configuration file.")
        sub.add_argument(
            "--db",
            help="Store URL, sqlite:///PATH or postgresql://...; overrides store.url.",
        )

    run = commands.add_parser("run", help="Run the gateway until SIGINT or SIGTERM.")
    common(run)
    run.add_argument("--mqtt", help="Broker URL mqtt://host:port; overrides mqtt.url.")
    run.add_argument(
        "--listen", help="HOST:PORT of the HTTP API; overrides api.listen."
    )
    run.add_argument(
        "--shared-group", help="Shared subscription group; overrides mqtt.shared_group."
    )
    run.add_argument(
        "--client-id", help="MQTT client id of this instance; overrides mqtt.client_id."
    )

    check = commands.add_parser("check-config", help="Validate a configuration file.")
    check.add_argument("file", type=Path)

    migrate = commands.add_parser(
        "migrate", help="Create or update the database schema."
    )
    common(migrate)

    token = commands.add_parser("token", help="Manage API tokens.")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create", help="Create a token and print it once."
    )
    common(create)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", default="cli", help="What the token is for.")

    commands.add_parser(
        "audit",
        help="Show the audit log, export a node's data or delete a site's old data.",
        add_help=False,
    )
    user = commands.add_parser("user", help="Create a user for POST /api/v1/login.")
    common(user)
    user.add_argument("username")
    user.add_argument("--role", required=True, choices=ROLES)
    user.add_argument(
        "--password-env",
        help="Read the password from this environment variable instead of a prompt.",
    )
    return parser


def _config(args: argparse.Namespace) -> GatewayConfig:
    config = (
        load_config(args.config) if getattr(args, "config", None) else parse_config({})
    )
    overrides: dict[str, Any] = {
        "store.url": getattr(args, "db", None),
        "mqtt.url": getattr(args, "mqtt", None),
        "mqtt.shared_group": getattr(args, "shared_group", None),
        "mqtt.client_id": getattr(args, "client_id", None),
        "api.listen": getattr(args, "listen", None),
    }
    return config.with_overrides(overrides)


def _check_listen(host: str, port: int) -> None:
    """Raise ConfigError when the API address cannot be bound.

    Checked before the MQTT connect, because a gateway that exits after
    subscribing leaves a persistent session on the broker that keeps
    queueing messages until it expires.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {error.strerror}; stop the "
                "process that uses the port or pass another --listen HOST:PORT"
            ) from None


def _run(config: GatewayConfig) -> int:
    _check_listen(config.api.host, config.api.port)
    gateway = Gateway(config)
    gateway.start()
    app = create_app(gateway.db, config, gateway.status)
    try:
        uvicorn.run(
            app,
            host=config.api.host,
            port=config.api.port,
            log_level=config.log_level.lower(),
            access_log=False,
            # Open SSE streams never end by themselves; without a limit a
            # shutdown would wait for every client to go away.
            timeout_graceful_shutdown=5,
        )
    finally:
        gateway.stop()
        gateway.db.close()
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise AuthError(f"environment variable {args.password_env} is not set")
        return value
    return getpass.getpass(f"password for {args.username}: ")


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        load_config(args.file)
        print(f"{args.file}: valid")
        return 0
    config = _config(args)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "run":
        return _run(config)
    db = open_database(config.store.url)
    try:
        applied = db.migrate()
        if args.command == "migrate":
            print(f"applied migrations: {applied or 'none, schema is current'}")
        elif args.command == "token":
            print(create_token(db, args.role, args.name))
        elif args.command == "user":
            set_user(db, args.username, _password(args), args.role)
            print(f"user {args.username} saved with role {args.role}")
    finally:
        db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] == "audit":
        # Audit log, per-node export and deletion: `sitlab-gateway audit --db URL
        # {log | export --site S --node N | delete --site S --before DATE}`.
        from gateway.audit import main as audit_main  # noqa: PLC0415

        return audit_main(arguments[1:])
    args = _parser().parse_args(arguments)
    try:
        return _dispatch(args)
    except (ConfigError, StoreError, AuthError) as error:
        print(f"sitlab-gateway: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
