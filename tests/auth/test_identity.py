from __future__ import annotations

import pytest

from aigw.auth.identity import (
    Forbidden,
    Identity,
    Method,
    Reason,
    Unauthenticated,
)
from aigw.auth.network import AllowList


def test_an_unrestricted_identity_may_use_any_model_from_anywhere() -> None:
    identity = Identity(subject="aigw-AbCdEfGh", method=Method.API_KEY)
    identity.check(model="gpt-4o-mini", ip="203.0.113.9")


def test_check_refuses_address_scope_and_model_with_a_403_reason() -> None:
    identity = Identity(
        subject="alice",
        method=Method.JWT,
        scopes=frozenset({"chat"}),
        models=frozenset({"gpt-4o-mini"}),
        networks=AllowList(["10.0.0.0/8"]),
    )
    identity.check(model="gpt-4o-mini", ip="10.1.1.1", scope="chat")
    cases = [
        ("gpt-4o-mini", "11.1.1.1", None, Reason.ADDRESS_NOT_ALLOWED),
        ("gpt-4o-mini", "10.1.1.1", "embed", Reason.SCOPE_MISSING),
        ("claude-sonnet", "10.1.1.1", None, Reason.MODEL_NOT_ALLOWED),
    ]
    for model, ip, scope, reason in cases:
        with pytest.raises(Forbidden) as caught:
            identity.check(model=model, ip=ip, scope=scope)
        assert caught.value.reason is reason


def test_failures_carry_only_their_reason() -> None:
    failure = Unauthenticated(Reason.INVALID_KEY)
    assert str(failure) == "invalid_key"
    assert failure.public_message == "Invalid or missing credentials"
    assert Forbidden(Reason.MODEL_NOT_ALLOWED).public_message == "Not allowed"


def test_identities_are_hashable_values() -> None:
    a = Identity("s", Method.JWT, networks=AllowList(["10.0.0.0/8"]))
    b = Identity("s", Method.JWT, networks=AllowList(["10.0.0.0/8"]))
    assert a == b and hash(a) == hash(b)
