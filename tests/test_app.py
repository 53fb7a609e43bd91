"""The app entry point: until the models exist it serves a page that says so."""

import socket
import time
import urllib.request

import app
from ui.placeholder import NOT_BUILT_MESSAGE, build_placeholder_app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_placeholder_page_is_served_and_says_models_are_not_built():
    demo = build_placeholder_app()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    config = response.read().decode()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        assert "not built yet" in config
        assert NOT_BUILT_MESSAGE.split(",")[0] in config
    finally:
        demo.close()


def test_app_defaults_to_loopback():
    args = app.parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860
