"""Authentication: passwords, JWT access tokens, users, sessions (refresh families) and the audit log.

Domain code on the Store interface only; the gateway and `helios user` sit on `AuthService`.
"""

from helios_core.auth.audit import Actor, AuditLog
from helios_core.auth.passwords import PasswordHasher, generate_password
from helios_core.auth.service import ADMIN_USERNAME, AuthService, Principal
from helios_core.auth.sessions import ApiToken, Session, Sessions, TokenPair
from helios_core.auth.tokens import KeyRing, token_hash
from helios_core.auth.users import User, UserDirectory

__all__ = [
    "Actor", "AuditLog", "PasswordHasher", "generate_password", "ADMIN_USERNAME", "AuthService", "Principal",
    "ApiToken", "Session", "Sessions", "TokenPair", "KeyRing", "token_hash", "User", "UserDirectory",
]
