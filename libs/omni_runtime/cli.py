"""The ``omni`` command: run services, apply migrations, run the local platform, contract tools.

omni serve <service>       run one service until SIGTERM (what container images run)
omni migrate <service>     apply the service's database migrations and exit (the Helm hook Job)
omni dev up [--only a,b]   the whole platform locally (what `make run` runs)
omni dev status            health of every local process
omni dev outbox            what the local platform "sent" (mails, texts, pushes in .omni/outbox/)
omni call SERVICE METHOD JSON  call a gRPC method (reflection, proto3 JSON); `omni call -h`
omni protos generate|lint|breaking|client-wheel
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path

from omni_runtime.config import LOCAL_PORTS, Settings


def _definition(service: str):  # type: ignore[no-untyped-def]
    try:
        module = importlib.import_module(f"services.{service}.main")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"services.{service}"):
            raise SystemExit(f"unknown service {service!r}") from None
        raise
    return module.SERVICE


def serve(service: str) -> int:
    definition = _definition(service)
    settings = Settings.from_env(service)
    runner = getattr(definition, "serve", None)  # the gateway serves HTTP with its own runner
    if runner is not None:
        asyncio.run(runner(settings))
        return 0
    from omni_runtime.server import serve as serve_grpc

    asyncio.run(serve_grpc(definition, settings))
    return 0


def migrate(service: str) -> int:
    from omni_runtime.db.migrate import upgrade
    from omni_runtime.logs import configure_logging

    definition = _definition(service)
    settings = Settings.from_env(service)
    configure_logging(service, settings.log_level)
    if not definition.uses_database:
        print(f"{service} has no database; nothing to migrate")
        return 0
    upgrade(service, settings.database_url)
    print(f"{service}: migrations applied")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni", description="Omni platform command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run one service")
    p_serve.add_argument("service", choices=sorted(LOCAL_PORTS))
    p_migrate = sub.add_parser("migrate", help="apply one service's migrations")
    p_migrate.add_argument("service", choices=sorted(LOCAL_PORTS))
    p_dev = sub.add_parser("dev", help="the local platform")
    dev_sub = p_dev.add_subparsers(dest="dev_command", required=True)
    p_up = dev_sub.add_parser("up", help="start everything and wait for Ctrl-C")
    p_up.add_argument("--only", help="comma-separated services to start (default: all)")
    p_up.add_argument("--home", default=os.environ.get("OMNI_HOME", ".omni"), help="data directory")
    dev_sub.add_parser("status", help="health of every local process")
    p_outbox = dev_sub.add_parser("outbox", help="the mails, texts and pushes the local platform sent")
    p_outbox.add_argument("--home", default=os.environ.get("OMNI_HOME", ".omni"), help="data directory")
    sub.add_parser("call", help="call a gRPC method of a running service (omni call -h)", add_help=False)
    p_protos = sub.add_parser("protos", help="contract tools")
    p_protos.add_argument("args", nargs=argparse.REMAINDER)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["call"]:  # its own parser: flags and JSON are passed through untouched
        from omni_runtime.devtools import call

        return call.main(argv[1:])
    args = parser.parse_args(argv)

    if args.command == "serve":
        return serve(args.service)
    if args.command == "migrate":
        return migrate(args.service)
    if args.command == "protos":
        from omni_runtime.devtools import protos

        protos.main(args.args)
        return 0
    from omni_runtime import localplatform

    if args.dev_command == "up":
        only = [s.strip() for s in args.only.split(",")] if args.only else None
        return localplatform.up(Path(args.home).resolve(), only)
    if args.dev_command == "outbox":
        return localplatform.outbox_report(Path(args.home).resolve())
    return localplatform.status_report()


if __name__ == "__main__":
    sys.exit(main())
