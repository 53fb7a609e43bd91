"""Start the rrg-review web app: ``python app.py`` (also the Hugging Face Spaces entry point)."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the app."""
    parser = argparse.ArgumentParser(description="rrg-review: radiology report drafting for chest X-rays")
    parser.add_argument("--host", default=os.environ.get("RRG_HOST", "127.0.0.1"),
                        help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RRG_PORT", "7860")))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build the page and serve it until interrupted."""
    args = parse_args(argv)
    from ui.placeholder import build_placeholder_app  # gradio import is slow: only when serving

    build_placeholder_app().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
