"""``make demo``: the whole data path on embedded defaults, with real processes and the real openai client.

Starts ``wardgate mock-llm`` and ``wardgate serve`` as subprocesses, sends a few requests through the
gateway, shows ``sessions`` and a ``replay``, then keeps serving with a live ``tail`` until Ctrl-C.
Not attached to a terminal (or with DEMO_ONCE=1) it exits 0 right after the showcase.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai

DATA_DIR = Path("demo-data")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {proc.args!r} exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"demo: nothing listening on port {port} after {timeout_s} s")


def wardgate(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


def step(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


@contextlib.contextmanager
def background(cmd: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def showcase(base_url: str) -> tuple[str, str]:
    """Real requests through the gateway; returns the streamed exchange's id and the agent's session id."""
    llm = openai.OpenAI(base_url=base_url, api_key="sk-demo-not-a-real-key", max_retries=0, timeout=30)
    step("A plain chat completion (openai SDK, non-streamed)")
    reply = llm.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "Explain what a recording gateway is."}]
    )
    print(f"assistant: {reply.choices[0].message.content}")

    step("A streamed completion: tokens arrive one by one through the gateway")
    raw_stream = llm.chat.completions.with_raw_response.create(
        model="mock-gpt",
        messages=[{"role": "user", "content": "Stream a short poem about audit logs."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed_exchange = raw_stream.headers["x-wardgate-exchange"]
    print("assistant: ", end="", flush=True)
    for chunk in raw_stream.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()

    step("An agent session: X-Wardgate-Session groups its calls; the model asks for a tool")
    agent = llm.with_options(default_headers={"X-Wardgate-Session": "demo-agent-1"})
    tools: list[openai.types.chat.ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "description": "Run a shell command",
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
            },
        }
    ]
    raw = agent.chat.completions.with_raw_response.create(
        model="mock-gpt",
        messages=[{"role": "user", "content": "Clean the build directory, call a tool."}],
        tools=tools,
    )
    call = raw.parse().choices[0].message.tool_calls
    if call:
        fn = call[0].function  # type: ignore[union-attr]
        print(f"tool call: {fn.name}({fn.arguments})")
    print(
        f"{DIM}response headers: X-Wardgate-Session={raw.headers['x-wardgate-session']}  "
        f"X-Wardgate-Exchange={raw.headers['x-wardgate-exchange']}{RESET}"
    )
    return streamed_exchange, raw.headers["x-wardgate-session"]


def wait_indexed(data_dir: Path, expected: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(
            wardgate("sessions", "--json", "--data-dir", str(data_dir)), capture_output=True, check=False
        )
        if out.returncode == 0 and sum(1 for _ in out.stdout.splitlines()) >= expected:
            return
        time.sleep(0.2)


def main() -> int:
    once = os.environ.get("DEMO_ONCE") == "1" or not sys.stdin.isatty() or not sys.stdout.isatty()
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    upstream_port = free_port(8000)
    gateway_port = free_port(8080)
    base_url = f"http://127.0.0.1:{gateway_port}/v1"
    step(f"Starting the mock model server on :{upstream_port} and wardgate on :{gateway_port}")
    mock_cmd = wardgate("mock-llm", "--listen", f"127.0.0.1:{upstream_port}", "--token-delay-ms", "30")
    serve_cmd = wardgate(
        "serve",
        "--listen", f"127.0.0.1:{gateway_port}",
        "--upstream", f"http://127.0.0.1:{upstream_port}",
        "--data-dir", str(DATA_DIR),
    )  # fmt: skip
    with background(mock_cmd) as mock, background(serve_cmd) as gateway:
        wait_for_port(upstream_port, mock)
        wait_for_port(gateway_port, gateway)
        streamed, session = showcase(base_url)
        wait_indexed(DATA_DIR, expected=2)

        step("wardgate sessions   (what the index knows)")
        subprocess.run(wardgate("sessions", "--data-dir", str(DATA_DIR)), check=True)
        step(f"wardgate replay {streamed}   (the stream, re-rendered at its recorded pace)")
        subprocess.run(wardgate("replay", streamed, "--data-dir", str(DATA_DIR)), check=True)
        step('wardgate search "audit logs"   (full text over prompts and responses)')
        subprocess.run(wardgate("search", "audit logs", "--data-dir", str(DATA_DIR)), check=True)
        step(f"wardgate replay {session}   (the agent conversation)")
        subprocess.run(wardgate("replay", session, "--speed", "0", "--data-dir", str(DATA_DIR)), check=True)
        step("wardgate verify   (CRC and hash chain over every frame)")
        subprocess.run(wardgate("verify", "--data-dir", str(DATA_DIR)), check=True)
        if once:
            print(f"\n{BOLD}Demo complete.{RESET} Recordings are in ./{DATA_DIR}.")
            return 0

        step("Live: point your own client here, every exchange appears below (Ctrl-C to stop)")
        print(f"   export OPENAI_BASE_URL={base_url}  OPENAI_API_KEY=anything")
        print(
            f"   curl {base_url}/chat/completions -H 'content-type: application/json' "
            '-d \'{"model":"m","messages":[{"role":"user","content":"hi"}]}\'\n'
        )
        tail = subprocess.Popen(wardgate("tail", "-f", "--data-dir", str(DATA_DIR)))
        try:
            tail.wait()
        except KeyboardInterrupt:
            tail.send_signal(signal.SIGINT)
            tail.wait(timeout=5)
            print("\nstopping.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
