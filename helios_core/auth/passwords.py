"""Password hashing with bcrypt, off the event loop.

bcrypt at cost 12 takes about a quarter of a second of CPU.  It runs in a
small thread pool (the bcrypt library releases the GIL), so the loop keeps
serving other requests meanwhile.  The pool's threads lower their own
scheduling priority on Linux, so a burst of logins cannot starve the loop
thread of a CPU: login latency absorbs the contention instead of every other
request's.

An unknown username is checked against a dummy hash of the same cost, so it
takes as long as a wrong password and the response time does not reveal
which usernames exist.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from helios_core.errors import InvalidInputError

__all__ = ["PasswordHasher", "generate_password", "check_password_policy", "MAX_PASSWORD_BYTES",
           "COMMON_PASSWORDS"]

MAX_PASSWORD_BYTES = 72  # bcrypt uses only the first 72 bytes; refuse rather than silently truncate


def generate_password() -> str:
    """A random password to print once (about 140 bits)."""
    return secrets.token_urlsafe(18)


# Passwords long enough for the length rule that still come first in every guessing list
# (from the public breach corpora's top entries).  Compared in lower case.
COMMON_PASSWORDS = frozenset("""
123456789012 1234567890123 12345678901234 123456789123 111111111111 000000000000 123123123123
password1234 password12345 password123456 password1234! passwordpassword password@123 p@ssw0rd1234
qwertyuiop12 qwertyuiop123 qwertyuiop1234 qwertyuiopasdf qwerty123456 qwerty1234567 1q2w3e4r5t6y
1qaz2wsx3edc zaq12wsxcde3 asdfghjkl123 asdfghjkl;' zxcvbnm12345 abc123456789 abcdefghijkl
iloveyou1234 iloveyou12345 letmein12345 letmein123456 welcome12345 welcome123456 welcome@1234
administrator administrator1 admin1234567 admin12345678 adminadmin123 changeme1234 changeme12345
trustno11234 monkey123456 dragon123456 football1234 baseball1234 sunshine1234 princess1234
superman1234 starwars1234 whatever1234 computer1234 internet1234 helloworld12 helloworld123
correcthorsebatterystaple
""".split()) | {"correct horse battery staple"}


def check_password_policy(password: object, min_length: int, field: str = "password") -> str:
    """The password if it may be set; InvalidInputError saying why not (length, whitespace, too common)."""
    if not isinstance(password, str):
        raise InvalidInputError(f"{field}: expected a string")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidInputError(f"{field}: must be at most {MAX_PASSWORD_BYTES} bytes (UTF-8)")
    if len(password) < min_length:
        raise InvalidInputError(f"{field}: must be at least {min_length} characters (auth.min_password_length)")
    if not password.strip():
        raise InvalidInputError(f"{field}: must not be all whitespace")
    if password.lower() in COMMON_PASSWORDS:
        raise InvalidInputError(f"{field}: too common (it is near the top of every password-guessing list); "
                                f"choose another, e.g. a few unrelated words")
    return password


def _lower_priority() -> None:
    try:  # On Linux a thread is a task: PRIO_PROCESS with its tid renices only this thread.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError):
        pass


class PasswordHasher:
    def __init__(self, cost: int = 12, workers: int | None = None) -> None:
        self.cost = cost
        n = workers or max(1, (os.cpu_count() or 2) - 1)
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="bcrypt", initializer=_lower_priority)
        self._dummy: bytes | None = None

    def hash_sync(self, password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(self.cost)).decode()

    @staticmethod
    def verify_sync(password: str, hashed: bytes) -> bool:
        pw = password.encode()
        if len(pw) > MAX_PASSWORD_BYTES:
            # Same work as a real check, then fail: bcrypt refuses such input.
            bcrypt.checkpw(pw[:MAX_PASSWORD_BYTES], hashed)
            return False
        return bcrypt.checkpw(pw, hashed)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.hash_sync, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True if `password` matches; with `hashed` None (unknown user) do the same work and say False."""
        loop = asyncio.get_running_loop()
        if hashed is None:
            if self._dummy is None:
                self._dummy = (await self.hash(generate_password())).encode()
            await loop.run_in_executor(self._pool, self.verify_sync, password, self._dummy)
            return False
        try:
            return await loop.run_in_executor(self._pool, self.verify_sync, password, hashed.encode())
        except ValueError:  # a damaged stored hash: never a match
            return False

    async def warm_up(self) -> None:
        """Compute the dummy hash now, so the first unknown-user login is not slower than the rest."""
        await self.verify("", None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
