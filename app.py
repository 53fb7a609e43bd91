"""Start the rrg-review web app: ``python app.py`` (also the Hugging Face Spaces entry point).

- ``python app.py``: with no checkpoint given (``--checkpoints`` or ``RRG_CHECKPOINTS``), the demo
  models are built once (phantom data set + the demo presets of both models, minutes on a CPU,
  cached in ``~/.cache/rrg-review``), then the page is served on http://127.0.0.1:7860.
- ``--host 0.0.0.0`` (or any address other than loopback) requires ``--auth-file``: reviewer logins.
- ``python app.py --auth-file users.json --add-user NAME`` adds a reviewer (asks for the password).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the app."""
    parser = argparse.ArgumentParser(description="rrg-review: radiology report drafting for chest X-rays")
    parser.add_argument(
        "--checkpoints",
        default=os.environ.get("RRG_CHECKPOINTS") or None,
        help="folder with the DCRRG and UAR checkpoints (default: RRG_CHECKPOINTS; without "
        "either, the demo models are built once in the user's cache folder)",
    )
    parser.add_argument(
        "--db",
        default=os.environ.get("RRG_DB") or None,
        help="review database: a SQLAlchemy URL (sqlite:///PATH, postgresql+psycopg://...) or a "
        "file path (default: rrg-review.sqlite in the user's data folder)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("RRG_HOST", DEFAULT_HOST),
        help="address to serve on (default 127.0.0.1: this machine only; any other needs --auth-file)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("RRG_PORT", str(DEFAULT_PORT))))
    parser.add_argument(
        "--auth-file",
        default=os.environ.get("RRG_AUTH_FILE") or None,
        help="reviewer logins (JSON of salted scrypt hashes); required off loopback",
    )
    parser.add_argument(
        "--add-user",
        metavar="NAME",
        help="add (or reset) reviewer NAME in --auth-file, asking for the password, and exit",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="with --add-user: read the password from the first line of standard input",
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("RRG_DATA") or None,
        help="data set folder the retrieval indexes were built from (for the neighbours' images; "
        "default: the folder recorded in the index)",
    )
    parser.add_argument(
        "--device", default=None, help="torch device for the models (default: cuda if available)"
    )
    return parser.parse_args(argv)


def check_exposure(host: str, auth_file: str | None) -> None:
    """Refuse to serve beyond this machine without logins (SystemExit with the reason)."""
    from ui.auth import is_loopback

    if not is_loopback(host) and not auth_file:
        raise SystemExit(
            f"rrg-review will not serve on {host} without reviewer logins: anyone who can reach it "
            "could read "
            "the studies and change reviews. Create logins with\n"
            "  python app.py --auth-file users.json --add-user NAME\n"
            f"and start with --host {host} --auth-file users.json (or serve on 127.0.0.1)."
        )


def add_user(auth_file: str | None, name: str, from_stdin: bool) -> int:
    """``--add-user``: ask for a password (twice) and store its hash."""
    from ui.auth import AuthError, UserFile

    if not auth_file:
        raise SystemExit("--add-user needs --auth-file FILE (the logins file to create or change)")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("the two passwords differ; nothing was changed")
    try:
        users = UserFile.load(auth_file, must_exist=False)
        users.add(name, password)
    except AuthError as error:
        raise SystemExit(str(error)) from None
    print(f"reviewer {name.strip()} saved in {users.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Build the page and serve it until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.add_user:
        return add_user(args.auth_file, args.add_user, args.password_stdin)
    check_exposure(args.host, args.auth_file)
    auth = None
    if args.auth_file:
        from ui.auth import AuthError, UserFile

        try:
            users = UserFile.load(args.auth_file)
        except AuthError as error:
            raise SystemExit(str(error)) from None
        if not users.users:
            raise SystemExit(f"{args.auth_file} has no reviewers yet: add one with --add-user NAME")
        auth = users.check
    checkpoints = args.checkpoints
    if checkpoints is None:
        from ui.bootstrap import BootstrapError, demo_checkpoints

        try:
            checkpoints = demo_checkpoints()
        except BootstrapError as error:
            raise SystemExit(str(error)) from None
    from rrg_core.errors import RRGError
    from ui.server import make_context, serve  # gradio and the models load only when serving

    try:
        context = make_context(checkpoints, args.db, data_root=args.data, device=args.device)
    except RRGError as error:
        raise SystemExit(f"cannot start: {error}") from None
    print(f"rrg-review: models from {checkpoints}; reviews in {context.store.description}")
    serve(context, args.host, args.port, auth=auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
