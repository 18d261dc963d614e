"""Secrets and accounts of the shared stack (infra/docker-compose.yml).

The compose file holds no secret: each one is a `${NAME:?...}` reference filled from `infra/.env`, which
`corpusflow infra init-env` writes with random values (and rewrites one value at a time to rotate it).
`ensure_mlflow_user` gives the workers their own MLflow account, so the admin password stays with people.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pipeline.errors import UserError

ENV_FILE = Path("infra") / ".env"  # from the repository root, where the compose commands run too
SECRET_BYTES = 24  # 32 URL-safe characters: safe inside connection URLs and compose interpolation

# Every secret the compose file references, with what holds it. Values are URL-safe random strings, except
# the Prefect auth string, which is `user:password`.
SECRETS: dict[str, str] = {
    "PREFECT_API_AUTH_STRING": "Prefect server basic auth, `user:password`; the UI asks for it, clients send it",
    "PREFECT_DB_PASSWORD": "Postgres role `prefect` (Prefect's database)",
    "MLFLOW_DB_PASSWORD": "Postgres role `mlflow` (MLflow's tracking and registry database)",
    "MLFLOW_ADMIN_PASSWORD": "MLflow user `admin`: people, the UI, account management",
    "MLFLOW_WORKER_PASSWORD": "MLflow user `corpusflow-worker`: what the workers log and register as",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "signs the MLflow server's CSRF tokens",
    "MINIO_ROOT_PASSWORD": "MinIO root `corpusflow-admin`: only the bucket and account setup uses it",
    "WORKER_S3_SECRET_KEY": "MinIO user `corpusflow-worker`: read/write on the datasets bucket only",
    "MLFLOW_S3_SECRET_KEY": "MinIO user `corpusflow-mlflow`: read/write on the MLflow artifacts bucket only",
}
PREFECT_AUTH_USER = "corpusflow"
# Deliberately outside SECRETS: where the published ports listen. Loopback unless someone chooses otherwise.
BIND_ADDRESS_DEFAULT = "127.0.0.1"


class EnvFileExists(UserError, FileExistsError):
    hint = "keep it, rotate single values with `corpusflow infra init-env --rotate NAME`, or pass --force"


def random_secret(name: str) -> str:
    value = secrets.token_urlsafe(SECRET_BYTES)
    return f"{PREFECT_AUTH_USER}:{value}" if name == "PREFECT_API_AUTH_STRING" else value


def init_env(path: Path = ENV_FILE, *, force: bool = False) -> Path:
    """Write an env file with a fresh random value for every secret, readable by its owner only."""
    if path.exists() and not force:
        raise EnvFileExists(f"{path} exists; writing it again would replace every secret of a running stack")
    values = {name: random_secret(name) for name in SECRETS}
    _write(path, values, {"CORPUSFLOW_BIND_ADDRESS": BIND_ADDRESS_DEFAULT})
    return path


def rotate(names: list[str], path: Path = ENV_FILE) -> Path:
    """Give the named secrets new random values and keep the others (and any setting added by hand)."""
    unknown = sorted(set(names) - SECRETS.keys())
    if unknown:
        raise UserError(f"not a secret of the stack: {unknown}; the secrets are {sorted(SECRETS)}")
    if not path.exists():
        raise UserError(f"{path} does not exist; create it with `corpusflow infra init-env`")
    values = read_env(path)
    settings = {name: value for name, value in values.items() if name not in SECRETS}
    secrets_now = {name: values.get(name) or random_secret(name) for name in SECRETS}
    secrets_now.update({name: random_secret(name) for name in names})
    _write(path, secrets_now, settings)
    return path


def read_env(path: Path) -> dict[str, str]:
    """NAME=value lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name.strip()] = value.strip()
    return values


def _write(path: Path, secret_values: dict[str, str], settings: dict[str, str]) -> None:
    lines = ["# Secrets of infra/docker-compose.yml: written by `corpusflow infra init-env`; never commit this file.",
             "# Rotate one with `corpusflow infra init-env --rotate NAME`, then follow README.md (Security)."]
    for name, value in secret_values.items():
        lines += [f"# {SECRETS[name]}", f"{name}={value}"]
    lines += ["# Where the published ports listen; 0.0.0.0 opens them to the network (put TLS in front first)."]
    lines += [f"{name}={value}" for name, value in settings.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    # created owner-only from the start: no moment where another local user could read it
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    path.chmod(0o600)


def ensure_mlflow_user(tracking_uri: str, username: str, password: str) -> str:
    """Create the MLflow account, or set its password when it exists (so rotating is re-running this).

    Runs as an MLflow admin: MLFLOW_TRACKING_USERNAME/PASSWORD of this process. Returns "created" or
    "updated".
    """
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    accounts = get_app_client("basic-auth", tracking_uri=tracking_uri)
    try:
        accounts.create_user(username, password)
        return "created"
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    accounts.update_user_password(username, password)
    return "updated"
