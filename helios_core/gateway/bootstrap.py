"""Files a gateway keeps in its data directory: the generated signing secret, the first admin password.

Both are written atomically (tmp file, fsync, link or rename, fsync the
directory), mode 0600; the secret is linked into place only if none exists,
so two starts racing cannot each write a different secret and a crash never
leaves a half-written one.  The data directory is the authority (as for
the AOF): whoever can read it can read these.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from helios_core.auth.tokens import generate_secret
from helios_core.errors import ConfigError
from helios_core.observability.logging import get_logger

__all__ = ["signing_key_specs", "write_initial_password", "SECRET_FILE", "PASSWORD_FILE"]

SECRET_FILE = "jwt_secret"
PASSWORD_FILE = "initial_admin_password"
log = get_logger("gateway")


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write `text` to `path`, mode 0600, atomically: a crash leaves the old file or the whole new one.

    tmp file (0600) -> fsync -> link (exclusive: fails if `path` exists, so two
    starts racing keep one secret) or rename -> fsync the directory.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            data = text.encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def signing_key_specs(configured: tuple[str, ...], data_dir: Path | None) -> list[str]:
    """The configured auth.jwt_keys, or the one generated into DATA/jwt_secret on first start."""
    if configured:
        return list(configured)
    if data_dir is None:
        raise ConfigError("no auth.jwt_keys configured and no data directory to keep a generated one in; "
                          "set one, e.g. export HELIOS_AUTH__JWT_KEYS=\"k1=$(python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(48))')\" (the same value on every gateway that shares "
                          "the store), or run with --data DIR", key="auth.jwt_keys")
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        try:
            _write_private(path, f"k{secrets.token_hex(4)}={generate_secret()}\n", exclusive=True)
            log.info("generated a JWT signing secret", path=str(path))
        except FileExistsError:
            pass
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("signing secret is readable by others; chmod 600 it", path=str(path), mode=oct(mode))
    spec = path.read_text().strip()
    if "=" not in spec:
        raise ConfigError(f"{path}: expected KID=SECRET", key="auth.jwt_keys")
    return [spec]


def write_initial_password(data_dir: Path, password: str) -> Path:
    path = Path(data_dir) / PASSWORD_FILE
    _write_private(path, password + "\n", exclusive=False)
    return path
