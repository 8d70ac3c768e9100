#!/usr/bin/env python3
"""A mock OpenAI-compatible LLM server for the system tests.

Answers POST .../chat/completions with a chat completion (and usage), like
OpenAI, Ollama or llama.cpp would. Binds 127.0.0.1 on a free port chosen by
the kernel and writes that port to PORT_FILE once it listens, so the test
never races for a port. Every request is appended to LOG_FILE as one JSON
line (path, Authorization header, body) for the test to check.

usage: mock_openai.py PORT_FILE LOG_FILE
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT_FILE, LOG_FILE = sys.argv[1], sys.argv[2]
ANSWER = (
    "# Summary (mock LLM)\n\n"
    "MOCK-SUMMARY-7f3a: this project prints the weather.\n"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep the harness output short
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        with open(LOG_FILE, "a") as log:
            log.write(json.dumps({
                "time": time.time(),
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "body": body,
            }) + "\n")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self.reply(404, {"error": {"message": f"no route {self.path}"}})
            return
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        self.reply(200, {
            "id": "chatcmpl-mock-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "mock-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": max(1, prompt // 4),
                "completion_tokens": 17,
                "total_tokens": max(1, prompt // 4) + 17,
            },
        })


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
# Renamed into place: the harness never reads a half-written port.
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
