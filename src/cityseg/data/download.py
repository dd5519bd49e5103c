"""Fetch the Cityscapes packages with the user's account, without ever storing the password.

cityscapesscripts' own `login()` offers to save the password in plain text; this module logs in itself (from the
environment or a prompt, in memory only), then uses the package's `download_packages` (resume, MD5 check).
"""

from __future__ import annotations

import getpass
import os
import zipfile
from pathlib import Path

from cityseg.errors import UserError

# The two packages the project needs: fine labels (241 MB) and left 8-bit images (11 GB).
DEFAULT_PACKAGES = ("gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip")
LOGIN_URL = "https://www.cityscapes-dataset.com/login"
USER_ENV = "CITYSCAPES_USERNAME"
PASSWORD_ENV = "CITYSCAPES_PASSWORD"


def read_credentials(username: str | None = None, prompt=input, secret_prompt=getpass.getpass) -> dict[str, str]:
    """Username and password from arguments, `CITYSCAPES_USERNAME`/`CITYSCAPES_PASSWORD`, or a prompt."""
    try:
        username = username or os.environ.get(USER_ENV) or prompt("Cityscapes username or email: ").strip()
        password = os.environ.get(PASSWORD_ENV) or secret_prompt("Cityscapes password (not stored): ")
    except EOFError:
        raise UserError(
            f"no Cityscapes credentials: {USER_ENV} or {PASSWORD_ENV} is not set and the input closed before the "
            f"prompt was answered (no terminal). Set {USER_ENV} and {PASSWORD_ENV} in the environment (or pass "
            "--username), or run the command in a terminal to be asked."
        ) from None
    if not username or not password:
        raise UserError(
            f"no Cityscapes credentials: set {USER_ENV} and {PASSWORD_ENV}, or answer the prompts. "
            "An account is created at https://www.cityscapes-dataset.com/register/."
        )
    return {"username": username, "password": password}


def login(credentials: dict[str, str], session=None):
    """Open an authenticated session; the credentials live only in this call's memory."""
    import requests

    session = session or requests.Session()
    try:
        response = session.post(LOGIN_URL, data={**credentials, "submit": "Login"}, allow_redirects=False)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise UserError(
            f"could not reach {LOGIN_URL} ({exc}); check the network, or download the two zips in a browser "
            "and unpack them into the dataset folder."
        ) from None
    if response.status_code != 302:  # the site answers a successful login with a redirect
        raise UserError(
            f"the Cityscapes site refused the login for {credentials['username']!r}; check the username and "
            f"password ({USER_ENV}/{PASSWORD_ENV} or the prompt)."
        )
    return session


def download(
    dest: Path,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    username: str | None = None,
    session=None,
    prompt=input,
    secret_prompt=getpass.getpass,
) -> list[Path]:
    """Download `packages` into `dest`, resuming any partial file already there."""
    from cityscapesscripts.download import downloader

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"--dest {dest} is a file; pass a folder for the zip files (it is created if missing).")
    session = login(read_credentials(username, prompt, secret_prompt), session)
    dest.mkdir(parents=True, exist_ok=True)  # after the login: a refused command leaves no empty folder
    paths = []
    for name in packages:
        target = dest / name
        try:
            downloader.download_packages(
                session=session, package_names=[name], destination_path=str(dest), resume=target.exists()
            )
        except Exception as exc:  # the package raises bare Exception for every problem
            raise UserError(
                f"downloading {name} into {target} failed: {exc}. Rerun the same command to resume; "
                f"delete {target} only if the MD5 check failed."
            ) from None
        paths.append(target)
    return paths


def extract(archives: list[Path], root: Path) -> None:
    """Unpack downloaded zips into `root`, refusing to overwrite files that already exist there."""
    root = Path(root)
    for archive in archives:
        try:
            with zipfile.ZipFile(archive) as zf:
                clashes = [n for n in zf.namelist() if not n.endswith("/") and (root / n).exists()]
                if clashes:
                    raise UserError(
                        f"unpacking {archive} into {root} would overwrite {len(clashes)} existing files "
                        f"(e.g. {root / clashes[0]}); unpack into an empty folder or move those files away."
                    )
                zf.extractall(root)
        except zipfile.BadZipFile:
            raise UserError(f"{archive} is not a complete zip file; rerun `cityseg download` to resume it.") from None
