"""User administration on every Store backend where it can race: the last `*` holder stays.

Counting the enabled `*` holders and then writing is two steps.  On a remote
store (atlasd, redis-server) two admins that disable, remove or demote each
other at the same moment each used to see the other remain, and both went:
nobody held `*` afterwards.  The changes now run under a store-wide lease.
"""

from __future__ import annotations

import asyncio

from helios_core.auth import Actor, AuditLog, AuthService, KeyRing, PasswordHasher
from helios_core.config import AuthConfig
from helios_core.errors import ConflictError
from helios_core.ratelimit import Policy, RateLimiter, RateLimitSettings
from helios_core.rbac import is_superuser
from helios_core.store import Store

NOW = 1_800_000_000_000
ME = Actor("tester", None, "10.0.0.1")
PASSWORD = "correct-horse-battery-staple"


FAST = Policy(100, 1)  # the default policy of these tests' limiter


def _service(store: Store, policy: Policy = FAST) -> tuple[AuthService, PasswordHasher]:
    cfg = AuthConfig(bcrypt_cost=4)
    keys = KeyRing.from_specs(["k1=" + "s" * 40], cfg.jwt_algorithms, issuer=cfg.jwt_issuer,
                              audience=cfg.jwt_audience, leeway_s=0)
    hasher = PasswordHasher(cfg.bcrypt_cost, workers=2)
    return AuthService(store, cfg, keys, hasher, RateLimiter(store, RateLimitSettings(policy)),
                       AuditLog(store, cfg.audit_max_entries)), hasher


async def _holders(svc: AuthService) -> list[str]:
    out = []
    for u in await svc.users.list():
        if not u.disabled and is_superuser(await svc.roles.grants_for(await svc.roles.roles_of(u.id))):
            out.append(u.username)
    return out


def test_two_admins_taking_star_from_each_other_leave_one(run_store) -> None:
    async def body(store: Store) -> None:
        svc, hasher = _service(store)
        try:
            await svc.roles.seed()
            for round_ in range(4):  # disable, remove, revoke the role, and a mix
                a, b = f"root{round_}a", f"root{round_}b"
                for name in (a, b):
                    await svc.create_user(name, PASSWORD, ["admin"], NOW, ME)
                if round_ > 0:  # the previous round's survivor must not count
                    for name in await _holders(svc):
                        if name not in (a, b):
                            await svc.set_disabled(name, True, NOW, ME)
                if round_ == 0:
                    ops = (svc.set_disabled(a, True, NOW, ME), svc.set_disabled(b, True, NOW, ME))
                elif round_ == 1:
                    ops = (svc.remove_user(a, NOW, ME), svc.remove_user(b, NOW, ME))
                elif round_ == 2:
                    ops = (svc.revoke(a, "admin", NOW, ME), svc.revoke(b, "admin", NOW, ME))
                else:
                    ops = (svc.set_disabled(a, True, NOW, ME), svc.revoke(b, "admin", NOW, ME))
                results = await asyncio.gather(*ops, return_exceptions=True)
                refused = [r for r in results if isinstance(r, ConflictError)]
                assert len(refused) == 1 and refused[0].code == "last_superuser", results
                assert len(await _holders(svc)) == 1
        finally:
            hasher.close()

    run_store(body)
