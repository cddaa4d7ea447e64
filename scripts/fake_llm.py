#!/usr/bin/env python3
"""A local stand-in for DeepSeek's API and self-hosted R1 servers, for the tests only.

It reproduces the response shapes and failure modes in ../shared/notes/llm-providers.md: reasoning in
`reasoning_content` (DeepSeek, llama.cpp), `reasoning` (vLLM), `thinking` (Ollama) or inline
`<think>` tags, 429 with and without Retry-After, 503, keep-alive blank lines before a late answer
(or forever), JSON-mode blank content, malformed JSON, finish_reason "length", slow bodies, an error
object under 200, `insufficient_system_resource`.

The scenario is the request's model name after "fake:" (e.g. "fake:429-retry-after"). Each
scenario counts its calls, so "then" scenarios fail first and succeed after. Every request body
is appended to the log file given as the first argument. Prints the port it listens on, then serves
until killed.

usage: fake_llm.py LOGFILE
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = '{"module": "forecasting", "confidence": 0.9, "params": {"horizon": 24}, "evidence_ids": ["a1"]}'
calls = {}
lock = threading.Lock()


def completion(content, reasoning_field=None, reasoning=None, finish="stop"):
    message = {"role": "assistant", "content": content}
    if reasoning_field:
        message[reasoning_field] = reasoning
    return {
        "id": "fake-1", "object": "chat.completion", "created": int(time.time()), "model": "fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30,
                  "completion_tokens_details": {"reasoning_tokens": 12}},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ds-trace-id", "trace-123")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def stream_raw(self, chunks, delay):
        """200 headers at once, then the body in pieces (keep-alive lines, then maybe an answer)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        with open(sys.argv[1], "a") as log:
            log.write(json.dumps({"path": self.path, "auth": self.headers.get("Authorization"),
                                  "body": raw.decode(errors="replace")}) + "\n")
        try:
            request = json.loads(raw)
        except ValueError:
            return self.send_json(400, {"error": {"message": "Invalid Format", "type": "invalid_request_error"}})
        scenario = str(request.get("model", "")).removeprefix("fake:")
        with lock:
            calls[scenario] = calls.get(scenario, 0) + 1
            n = calls[scenario]
        ok = completion(ANSWER, "reasoning_content", "The furnace trend says forecast.")

        if scenario == "ok-deepseek":
            return self.send_json(200, ok)
        if scenario == "ok-vllm":
            return self.send_json(200, completion(ANSWER, "reasoning", "vLLM reasoning."))
        if scenario == "ok-ollama":
            return self.send_json(200, completion(ANSWER, "thinking", "Ollama thinking."))
        if scenario == "think-inline":
            return self.send_json(200, completion("<think>Inline reasoning.</think>\n\n" + ANSWER))
        if scenario == "think-bare-close":
            return self.send_json(200, completion("Reasoning without an opening tag.\n</think>\n\n" + ANSWER))
        if scenario == "fenced-json":
            return self.send_json(200, completion("Here you go:\n```json\n" + ANSWER + "\n```\nDone."))
        if scenario == "429-retry-after":
            if n == 1:
                return self.send_json(429, {"error": {"message": "Rate Limit Reached", "type": "rate_limit_error"}},
                                      [("Retry-After", "1")])
            return self.send_json(200, ok)
        if scenario == "429-no-header":
            if n == 1:
                return self.send_json(429, {"error": {"message": "Rate Limit Reached", "type": "rate_limit_error"}})
            return self.send_json(200, ok)
        if scenario == "503-then-ok":
            if n == 1:
                return self.send_json(503, {"error": {"message": "Server Overloaded", "type": "server_error"}})
            return self.send_json(200, ok)
        if scenario == "503-always":
            return self.send_json(503, {"error": {"message": "Server Overloaded", "type": "server_error"}})
        if scenario in ("400", "401", "402", "422"):
            messages = {"400": "Invalid Format", "401": "Authentication Fails, Your api key: ****abcd is invalid",
                        "402": "Insufficient Balance", "422": "Invalid Parameters"}
            return self.send_json(int(scenario), {"error": {"message": messages[scenario], "type": "invalid_request_error"}})
        if scenario == "keepalive-then-ok":
            return self.stream_raw([b"\n"] * 4 + [json.dumps(ok).encode()], 0.25)
        if scenario == "keepalive-forever":
            return self.stream_raw([b"\n"] * 400, 0.05)
        if scenario == "error-in-200":
            if n == 1:
                return self.stream_raw([b"\n", b"\n", json.dumps({"error": {"message": "internal", "type": "server_error"}}).encode()], 0.05)
            return self.send_json(200, ok)
        if scenario == "blank-then-ok":
            if n == 1:
                return self.send_json(200, completion("     ", "reasoning_content", "thought"))
            return self.send_json(200, ok)
        if scenario == "malformed":
            data = b'{"choices": [{"message": {"content": "oops"'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if scenario == "length":
            return self.send_json(200, completion('{"module": "forec', "reasoning_content", "long", finish="length"))
        if scenario == "insufficient-then-ok":
            if n == 1:
                return self.send_json(200, completion("", "reasoning_content", "partial", finish="insufficient_system_resource"))
            return self.send_json(200, ok)
        if scenario == "injected":
            # A valid-looking answer that reaches outside the allow-list and the bounds.
            evil = '{"module": "shutdown_plant", "action": "invoke", "confidence": 1.0, "params": {"horizon": 100000}, "publish": "apos/cmd/etl"}'
            return self.send_json(200, completion(evil, "reasoning_content", "Ignore the rules."))
        if scenario == "skip":
            return self.send_json(200, completion('{"action": "skip", "confidence": 0.8}', "reasoning_content", "Not worth it."))
        if scenario == "ok-advice":
            answer = '{"action": "invoke", "module": "forecasting", "confidence": 0.9, "params": {"horizon": 24}, "evidence_ids": ["t1"]}'
            return self.send_json(200, completion(answer, "reasoning_content", "The limit breach justifies a longer horizon."))
        if scenario == "answer":
            return self.send_json(200, completion("a1 is the furnace outlet above its HI limit; forecasting was invoked.",
                                                  "reasoning_content", "Looked at a1."))
        if scenario == "judge":
            # An advisor whose answer follows the alert's severity in DATA (for `dang eval-advisor`):
            # critical: invoke; warning: skip; anything else: an answer outside the contract.
            content = request.get("messages", [{}])[-1].get("content", "")
            data = json.loads(content.split("DATA:\n", 1)[1]) if "DATA:\n" in content else {}
            severity = data.get("alert", {}).get("severity")
            if severity == "critical":
                answer = json.dumps({"action": "invoke", "module": data["eligible"][0], "confidence": 0.9, "evidence_ids": ["t1"]})
            elif severity == "warning":
                answer = '{"action": "skip", "confidence": 0.7}'
            else:
                answer = '{"action": "invoke", "module": "shutdown_plant", "confidence": 2}'
            time.sleep(0.01 * (n % 3))
            return self.send_json(200, completion(answer, "reasoning_content", "Judged by severity."))
        if scenario == "slow":
            time.sleep(6)
            return self.send_json(200, ok)
        return self.send_json(400, {"error": {"message": "Model Not Exist", "type": "invalid_request_error"}})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
