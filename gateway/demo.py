"""``make demo``: the whole data path with real processes, real identities and the real openai client.

Starts ``wardgate mock-llm``, ``wardgate dev-idp`` (a local OIDC issuer, NOT for production) and
``wardgate serve`` with auth, a policy and an upstream credential of its own, mints tokens, sends a few
requests through the gateway (one refused by policy, one with a bad token), shows ``sessions`` and a
``replay``, then keeps serving with a live ``tail`` until Ctrl-C. Not attached to a terminal (or with
DEMO_ONCE=1) it exits 0 right after the showcase.
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

from gateway.identity.apikeys import config_snippet, hash_api_key, new_api_key

DATA_DIR = Path("demo-data")
IDP_DIR = Path("demo-idp")  # the dev IdP's key and the gateway's config, outside the data dir
UPSTREAM_KEY = "sk-demo-upstream-key-held-by-wardgate"
POLICY = """
[[policy.rules]]
name = "anyone-lists-models"
methods = ["GET"]
paths = ["/v1/models", "/v1/models/*"]

[[policy.rules]]
name = "dev-chat-mock-models"
groups = ["dev"]
methods = ["POST"]
paths = ["/v1/chat/completions"]
models = ["mock-*"]

[[policy.rules]]
name = "ci-embeddings"
groups = ["ci"]
methods = ["POST"]
paths = ["/v1/embeddings"]

[upstream_credential]
env = "DEMO_UPSTREAM_KEY"
"""
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
def background(
    cmd: list[str], env: dict[str, str] | None = None, *, stdout: int = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env)
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


def mint(idp: str, sub: str, groups: str, email: str) -> str:
    out = subprocess.run(
        wardgate("token", "--idp", idp, "--sub", sub, "--groups", groups, "--email", email, "--ttl", "1h"),
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


def gateway_config(idp: str, ci_key: str) -> str:
    auth = f'[auth.oidc]\nissuer = "{idp}"\naudience = ["wardgate"]\n\n'
    return auth + config_snippet("ci-bot", hash_api_key(ci_key), ["ci"]) + POLICY


def refusals(base_url: str, alice: str) -> None:
    """What the gateway refuses: a model the policy does not allow, and a forged token."""
    llm = openai.OpenAI(base_url=base_url, api_key=alice, max_retries=0, timeout=30)
    step("Policy: alice (group dev) asks for a model no rule allows her -> 403")
    try:
        llm.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    except openai.PermissionDeniedError as exc:
        print(f"refused: {exc.status_code} {exc.message}")
    step("Authentication: a token with a forged signature -> 401 (the model never sees it)")
    head, payload, signature = alice.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    try:
        openai.OpenAI(base_url=base_url, api_key=forged, max_retries=0, timeout=30).models.list()
    except openai.AuthenticationError as exc:
        print(f"refused: {exc.status_code} {exc.message}")


def showcase(base_url: str, alice: str, ci_key: str) -> tuple[str, str]:
    """Real requests through the gateway; returns the streamed exchange's id and the agent's session id."""
    llm = openai.OpenAI(base_url=base_url, api_key=alice, max_retries=0, timeout=30)
    step("A plain chat completion as alice (openai SDK, her OIDC token as api_key)")
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
    step("A service account: ci-bot's API key (wardgate apikey new) may only embed")
    ci = openai.OpenAI(base_url=base_url, api_key=ci_key, max_retries=0, timeout=30)
    vector = ci.embeddings.create(model="mock-gpt", input="release notes").data[0].embedding
    print(f"embedding of {len(vector)} dimensions for ci-bot")
    refusals(base_url, alice)
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
    for directory in (DATA_DIR, IDP_DIR):
        shutil.rmtree(directory, ignore_errors=True)
    IDP_DIR.mkdir()
    upstream_port = free_port(8000)
    gateway_port = free_port(8080)
    idp_port = free_port(9400)
    idp = f"http://127.0.0.1:{idp_port}"
    base_url = f"http://127.0.0.1:{gateway_port}/v1"
    step(f"Starting the mock model :{upstream_port}, the dev IdP :{idp_port} and wardgate :{gateway_port}")
    mock_cmd = wardgate("mock-llm", "--listen", f"127.0.0.1:{upstream_port}", "--token-delay-ms", "30")
    idp_cmd = wardgate("dev-idp", "--listen", f"127.0.0.1:{idp_port}", "--state-dir", str(IDP_DIR))
    ci_key = new_api_key()
    config = IDP_DIR / "wardgate.toml"
    serve_cmd = wardgate(
        "serve",
        "--config", str(config),
        "--listen", f"127.0.0.1:{gateway_port}",
        "--upstream", f"http://127.0.0.1:{upstream_port}",
        "--data-dir", str(DATA_DIR),
    )  # fmt: skip
    # The model's key lives in the gateway's environment only; clients never hold it.
    serve_env = {**os.environ, "DEMO_UPSTREAM_KEY": UPSTREAM_KEY}
    with background(mock_cmd) as mock, background(idp_cmd) as dev_idp:
        wait_for_port(upstream_port, mock)
        wait_for_port(idp_port, dev_idp)
        config.write_text(gateway_config(idp, ci_key))
        alice = mint(idp, "alice", "dev", "alice@example.com")
        print(f"{DIM}wardgate token --idp {idp} --sub alice --groups dev -> {alice[:24]}...{RESET}")
        with background(serve_cmd, serve_env) as gateway:
            wait_for_port(gateway_port, gateway)
            streamed, session = showcase(base_url, alice, ci_key)
            wait_indexed(DATA_DIR, expected=3)
            tour(streamed, session, base_url, idp, once)
    return 0


def tour(streamed: str, session: str, base_url: str, idp: str, once: bool) -> None:
    """The read side: sessions, replay, search, verify; then a live tail unless ``once``."""
    step("wardgate sessions   (what the index knows)")
    subprocess.run(wardgate("sessions", "--data-dir", str(DATA_DIR)), check=True)
    step("wardgate search --group ci   (who did what, by the verified identity)")
    subprocess.run(wardgate("search", "--group", "ci", "--data-dir", str(DATA_DIR)), check=True)
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
        return

    step("Live: point your own client here, every exchange appears below (Ctrl-C to stop)")
    print(f"   export OPENAI_BASE_URL={base_url}")
    print(f"   export OPENAI_API_KEY=$(wardgate token --idp {idp} --sub you --groups dev)")
    print(
        f'   curl {base_url}/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" '
        "-H 'content-type: application/json' "
        '-d \'{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}\'\n'
    )
    tail = subprocess.Popen(wardgate("tail", "-f", "--data-dir", str(DATA_DIR)))
    try:
        tail.wait()
    except KeyboardInterrupt:
        tail.send_signal(signal.SIGINT)
        tail.wait(timeout=5)
        print("\nstopping.")


if __name__ == "__main__":
    sys.exit(main())
