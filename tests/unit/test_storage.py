"""Output folders given as URLs: told apart from paths, credentials hidden, refused saying why."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from pytest_millrun.core.storage import (
    StorageError,
    check_output_url,
    output_url,
    redacted,
    url_scheme,
)


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("s3://bucket/prefix", "s3"),
        ("GS://bucket", "gs"),
        ("memory://x", "memory"),
        ("abfs://container/dir", "abfs"),
        ("runs/out", None),
        ("/abs/out", None),
        ("C://odd/windows", None),  # a drive letter, not a scheme
        ("s3:/collapsed", None),  # what Path() made of a URL: a path
        ("", None),
    ],
)
def test_a_url_is_told_apart_from_a_path(text: str, scheme: str | None) -> None:
    assert url_scheme(text) == scheme


def test_credentials_in_a_url_are_never_shown() -> None:
    assert redacted("s3://KEY:SECRET@bucket/p") == "s3://***@bucket/p"
    assert redacted("s3://bucket/p") == "s3://bucket/p"
    assert redacted("sftp://me@host/p") == "sftp://me@host/p"  # a user alone is no secret


def test_a_scheme_without_its_filesystem_names_the_package_to_install() -> None:
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(StorageError) as info:
        check_output_url("gs://bucket/run", "--output-dir")
    message = str(info.value)
    assert message.startswith("--output-dir gs://bucket/run is a URL")
    assert "gcsfs" in message
    assert "no local folder named 'gs:' was made" in message


def test_without_fsspec_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if not installed
    with pytest.raises(StorageError, match=r"pip install 'pytest-millrun\[fsspec\]'"):
        check_output_url("s3://bucket/run", "output_dir=")


def test_an_unknown_scheme_says_no_filesystem_is_registered() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(StorageError, match="no filesystem is registered for it"):
        check_output_url("nosuchfs://x/y", "--output-dir")


def test_an_installed_filesystem_passes_the_check() -> None:
    pytest.importorskip("fsspec")
    check_output_url("memory://user:pw@host/run", "--output-dir")  # fsspec's own, no raise


def test_an_output_url_is_the_root_joined_with_the_outputs_relative_path() -> None:
    assert output_url("s3://b/pre/", "sub/0-a.ipynb") == "s3://b/pre/sub/0-a.ipynb"


def test_a_version_is_the_same_from_a_listing_and_from_a_lookup() -> None:
    from datetime import datetime, timezone

    from pytest_millrun.core.storage import version_of

    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert version_of({"created": when, "size": 3}) == version_of(
        {"created": when.timestamp(), "size": 3}
    )
    etag = {"ETag": '"abc"', "LastModified": when, "size": 3}
    assert version_of(etag) == version_of({**etag, "LastModified": "other"}) == 'ETag="abc" size=3'
    assert version_of({"size": 3}) is None  # nothing that changes with each write: no hits
