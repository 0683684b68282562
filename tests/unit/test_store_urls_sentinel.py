"""redis+sentinel:// store URLs: what they parse to, and the errors for what they do not accept."""

from __future__ import annotations

import pytest

from helios_core.errors import HeliosError
from helios_core.store.url import SENTINEL_PORT, parse_store_url


def test_hosts_service_and_db() -> None:
    u = parse_store_url("redis+sentinel://:s3cret@10.0.0.1:26380,10.0.0.2,[::1]:26381/mymaster/2")
    assert u.kind == "sentinel"
    assert u.sentinels == (("10.0.0.1", 26380), ("10.0.0.2", SENTINEL_PORT), ("::1", 26381))
    assert u.service == "mymaster" and u.db == 2
    assert u.password == "s3cret" and u.username is None
    assert (u.host, u.port) == ("10.0.0.1", 26380)
    assert u.where == "mymaster via sentinels 10.0.0.1:26380,10.0.0.2:26379,[::1]:26381"


def test_query_parameters() -> None:
    u = parse_store_url("redis+sentinel://app:pw@h:1/svc?db=3&sentinel_password=sp&sentinel_username=su&timeout=2")
    assert (u.username, u.password, u.db, u.timeout) == ("app", "pw", 3, 2.0)
    assert (u.sentinel_username, u.sentinel_password) == ("su", "sp")


def test_passwords_are_redacted() -> None:
    u = parse_store_url("redis+sentinel://:topsecret@h1,h2/svc?sentinel_password=alsosecret")
    for text in (u.redacted, repr(u)):
        assert "topsecret" not in text and "alsosecret" not in text
    assert "h1,h2/svc" in u.redacted


@pytest.mark.parametrize(("url", "words"), [
    ("redis+sentinel://h1,h2", "no service name"),
    ("redis+sentinel://h1/", "no service name"),
    ("redis+sentinel://h1:x/svc", "must be a number"),
    ("redis+sentinel://h1:70000/svc", "out of range"),
    ("redis+sentinel://h1,,h2/svc", "without a host"),
    ("redis+sentinel://h1/svc/1/2", "/SERVICE or /SERVICE/DB"),
    ("redis+sentinel://h1/svc/x", "whole number"),
    ("redis+sentinel://h1/svc?ssl_certfile=a", "unknown parameter"),
    ("redis+sentinel://[::1/svc", "bad sentinel address"),
])
def test_errors_name_the_problem_and_the_forms(url: str, words: str) -> None:
    with pytest.raises(HeliosError) as e:
        parse_store_url(url)
    assert e.value.code == "bad_store_url"
    assert words in str(e.value) and "redis+sentinel://" in str(e.value)


def test_wrong_password_never_shown_in_errors() -> None:
    with pytest.raises(HeliosError) as e:
        parse_store_url("redis+sentinel://:hunter2@h1:bad/svc")
    assert "hunter2" not in str(e.value)
