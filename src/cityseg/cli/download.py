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
        "disk. A partial download is resumed by running the same command again; each package's MD5 sum is checked.",
    )
    add = parser.add_argument
    add("--dest", type=Path, default=Path("downloads"), metavar="DIR", help="folder for the zip files")
    add("--username", metavar="NAME", help="Cityscapes username or email (default: CITYSCAPES_USERNAME)")
    packages = "package names to fetch (default: gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip)"
    add("--packages", nargs="+", metavar="NAME", help=packages)
    unpack = "unpack the zips into ROOT afterwards (e.g. cityscapes); existing files are never overwritten"
    add("--extract", type=Path, metavar="ROOT", help=unpack)
    parser.set_defaults(func=run)


def run(args) -> int:
    """Download, optionally extract, and say what comes next."""
    from cityseg.data.download import DEFAULT_PACKAGES, download, extract

    paths = download(args.dest, tuple(args.packages or DEFAULT_PACKAGES), username=args.username)
    if args.extract:
        extract(paths, args.extract)
        print(f"unpacked into {args.extract}\nnext: cityseg prepare {args.extract}")
    else:
        print(
            f"downloaded {len(paths)} packages into {args.dest}\nnext: unzip them into one folder ROOT, then run "
            "cityseg prepare ROOT"
        )
    return 0
