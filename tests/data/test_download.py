"""`cityseg download` against an in-memory stand-in for the Cityscapes site (no network in tests)."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from cityseg.data.download import download, extract
from cityseg.errors import UserError

PAYLOAD = b"0123456789" * 1000


class FakeResponse:
    def __init__(self, status=200, text="", json_data=None, body=b""):
        self.status_code, self.text, self._json, self._body = status, text, json_data, body

    def raise_for_status(self):
        if self.status_code >= 400:
            raise RuntimeError(self.status_code)

    def json(self):
        return self._json

    def iter_content(self, chunk_size=1024):
        for i in range(0, len(self._body), chunk_size):
            yield self._body[i : i + chunk_size]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeSite:
    """Answers login, package list, md5 and ranged file requests like the real site's API."""

    def __init__(self, password="s3cret", login_status=302):
        self.password, self.login_status, self.posts, self.ranges = password, login_status, [], []

    def post(self, url, data=None, allow_redirects=False):
        self.posts.append(dict(data))
        ok = data.get("password") == self.password
        return FakeResponse(status=self.login_status if ok else 200)

    def get(self, url, allow_redirects=False, stream=False, headers=None):
        if url.endswith("?list"):
            return FakeResponse(
                json_data=[{"name": "gtFine_trainvaltest.zip", "packageID": "1", "size": "9.8KB", "thirdparty": "0"}]
            )
        if "md5-sum" in url:
            return FakeResponse(text=hashlib.md5(PAYLOAD).hexdigest() + "  gtFine_trainvaltest.zip")
        start = int(headers["Range"].split("=")[1].rstrip("-")) if headers and "Range" in headers else 0
        self.ranges.append(start)
        return FakeResponse(status=206 if start else 200, body=PAYLOAD[start:])


def test_download_reads_password_from_env_and_never_writes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_USERNAME", "ada")
    monkeypatch.setenv("CITYSCAPES_PASSWORD", "s3cret")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where cityscapesscripts would store credentials
    site = FakeSite()
    paths = download(
        tmp_path / "dl", ("gtFine_trainvaltest.zip",), session=site, prompt=pytest.fail, secret_prompt=pytest.fail
    )
    assert paths[0].read_bytes() == PAYLOAD
    assert site.posts[0]["username"] == "ada"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes(), f"password written to {path}"


def test_download_prompts_when_env_is_empty(tmp_path, monkeypatch):
    monkeypatch.delenv("CITYSCAPES_USERNAME", raising=False)
    monkeypatch.delenv("CITYSCAPES_PASSWORD", raising=False)
    site = FakeSite()
    download(
        tmp_path, ("gtFine_trainvaltest.zip",), session=site, prompt=lambda _: "ada", secret_prompt=lambda _: "s3cret"
    )
    assert site.posts[0] == {"username": "ada", "password": "s3cret", "submit": "Login"}


def test_download_resumes_a_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_PASSWORD", "s3cret")
    partial = tmp_path / "gtFine_trainvaltest.zip"
    partial.write_bytes(PAYLOAD[:4000])
    site = FakeSite()
    download(tmp_path, ("gtFine_trainvaltest.zip",), username="ada", session=site)
    assert site.ranges == [4000]
    assert partial.read_bytes() == PAYLOAD


def test_bad_password_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_PASSWORD", "wrong")
    with pytest.raises(UserError, match="refused the login"):
        download(tmp_path, ("gtFine_trainvaltest.zip",), username="ada", session=FakeSite())


def test_extract_refuses_to_overwrite(tmp_path):
    archive = tmp_path / "gt.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("gtFine/train/a.json", "{}")
    root = tmp_path / "cityscapes"
    extract([archive], root)
    assert (root / "gtFine/train/a.json").read_text() == "{}"
    (root / "gtFine/train/a.json").write_text("mine")
    with pytest.raises(UserError, match="overwrite"):
        extract([archive], root)
    assert (root / "gtFine/train/a.json").read_text() == "mine"
