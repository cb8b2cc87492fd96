"""Helpers of the operator tests."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedModule:
    """A stand-in VX11 module on 127.0.0.1 that answers each path (GET or POST) with the JSON text it was
    given, byte for byte: for what the demo fleet never sends (NaN, a string where a number belongs)."""

    def __init__(self, answers: dict[str, str]):
        scripted = answers

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = scripted.get(self.path)
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write((body or '{"detail": "Not Found"}').encode())

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "ScriptedModule":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
