"""`cityseg download`: fetch the Cityscapes zips with the user's account (password never stored)."""

from __future__ import annotations

from pathlib import Path

from cityseg.cli.common import add_command


def register(subparsers) -> None:
    """Add the `download` subcommand."""
    parser = add_command(
        subparsers,
        "download",
        help="download the Cityscapes packages (needs an account)",
        description="Download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip with your Cityscapes "
        "account. The username comes from --username or CITYSCAPES_USERNAME, the password from "
        "CITYSCAPES_PASSWORD or a prompt (without a terminal, set both variables); neither is ever written to "
        "disk. A partial download is resumed "
        "by running the same command again; each package's MD5 sum is checked.",
    )
    parser.add_argument("--dest", type=Path, default=Path("downloads"), help="folder for the zip files")
    parser.add_argument("--username", default=None, help="Cityscapes username or email")
    parser.add_argument(
        "--packages",
        nargs="+",
        default=None,
        metavar="NAME",
        help="package names to fetch (default: gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip)",
    )
    parser.add_argument(
        "--extract",
        type=Path,
        default=None,
        metavar="ROOT",
        help="unpack the zips into ROOT afterwards (e.g. cityscapes); existing files are never overwritten",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    """Download, optionally extract, and say what comes next."""
    from cityseg.data.download import DEFAULT_PACKAGES, download, extract

    paths = download(args.dest, tuple(args.packages or DEFAULT_PACKAGES), username=args.username)
    if args.extract:
        extract(paths, args.extract)
        print(f"unpacked into {args.extract}; next: cityseg prepare {args.extract}")
    else:
        print(
            f"downloaded {len(paths)} packages into {args.dest}; unzip them into one folder, then run cityseg prepare"
        )
    return 0
