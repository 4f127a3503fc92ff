"""The error <-> HTTP table round-trips every error class; token helpers behave."""

from __future__ import annotations

from pathlib import Path

import pytest

from katib import errors
from katib.server.grpc_auth import bearer_of, token_matches
from katib.server.http_errors import TO_HTTP, error_body, error_from_response, http_status_for
from katib.server.main import is_loopback


@pytest.mark.parametrize("cls", [cls for cls, _ in TO_HTTP if cls is not errors.InvalidSpecError])
def test_every_error_round_trips(cls: type[errors.KatibError]) -> None:
    exc = cls("boom")
    status = http_status_for(exc)
    back = error_from_response(status, error_body(exc), "GET /x")
    assert type(back) is cls
    assert "boom" in str(back) and "GET /x" in str(back)
    assert back.retryable == exc.retryable


def test_invalid_spec_keeps_problems() -> None:
    exc = errors.InvalidSpecError([errors.Problem("spec.maxTrialCount", "must be > 0", 4)])
    body = error_body(exc)
    assert http_status_for(exc) == 422
    assert body["detail"] == [{"path": "spec.maxTrialCount", "message": "must be > 0", "line": 4}]
    back = error_from_response(422, body, "POST /x")
    assert isinstance(back, errors.InvalidSpecError)
    assert back.problems == exc.problems


def test_status_alone_when_the_body_names_no_class() -> None:
    assert isinstance(error_from_response(404, "nope", "GET /x"), errors.NotFoundError)
    assert isinstance(error_from_response(502, "bad gateway", "GET /x"), errors.UnavailableError)
    unauthorized = error_from_response(401, {"detail": "no token"}, "GET /x")
    assert "unauthorized" in str(unauthorized)


def test_conflict_and_already_exists_share_409() -> None:
    for cls in (errors.AlreadyExistsError, errors.ConflictError):
        assert http_status_for(cls("x")) == 409
        assert type(error_from_response(409, error_body(cls("x")), "w")) is cls


def test_bearer_parsing_and_comparison() -> None:
    assert bearer_of("Bearer abc") == "abc"
    assert bearer_of("bearer  abc ") == "abc"
    assert bearer_of("Basic abc") is None
    assert bearer_of("abc") is None
    assert bearer_of(None) is None
    assert token_matches("abc", "abc")
    assert not token_matches("abc", "abd")
    assert not token_matches("abc", None)
    assert not token_matches("abc", "")


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.org", ""):
        assert not is_loopback(host), host


def test_load_token(tmp_path: Path) -> None:
    from katib.server.auth import load_token

    path = tmp_path / "t"
    path.write_text("  tok  \nsecond line\n")
    assert load_token(path, {}) == "tok"
    assert load_token(None, {"KATIB_TOKEN": " env "}) == "env"
    assert load_token(None, {}) is None
    path.write_text("\n")
    with pytest.raises(errors.InvalidArgumentError, match="empty"):
        load_token(path, {})
    with pytest.raises(errors.InvalidArgumentError, match="cannot read"):
        load_token(tmp_path / "missing", {})
