"""Helpers of the server tests: a tiny model directory, and a real `python -m ms_gpt.serve` process on 127.0.0.1
with a free port that is always stopped (terminate, then kill)."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_model_dir(directory: str, vocabulary: str = "bert-base-chinese", n_positions: int = 128,
                   chat_template: bool = True) -> str:
    """A random tiny GPT-2 + tokenizer saved like a fine-tuned model (save_pretrained). Weights are scaled up from
    the default init so that greedy text depends on the prompt instead of repeating one token. A BERT vocabulary
    gets the dialogue chat template (as the dialogue recipe saves it)."""
    from mindspore import Tensor

    from ms_gpt.config import GPTConfig
    from ms_gpt.dialogue import DIALOGUE_CHAT_TEMPLATE
    from ms_gpt.model import GPTLMHeadModel
    from ms_gpt.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(vocabulary)
    model = GPTLMHeadModel(GPTConfig(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2,
                                     n_head=4))
    rng = np.random.default_rng(0)
    for param in model.get_parameters():
        if ".ln_" not in param.name:
            std = 1.0 if "wpe" in param.name else 0.1
            param.set_data(Tensor(rng.normal(0.0, std, param.shape).astype(np.float32)))
    if chat_template and tokenizer.cls_token_id is not None:
        tokenizer.chat_template = DIALOGUE_CHAT_TEMPLATE
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10.0) -> tuple:
    """(status, body text) of a GET; connection errors give (None, message)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8")
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        return None, str(err)


def http_post(url: str, body, timeout: float = 60.0) -> tuple:
    """(status, parsed JSON or text) of a POST; `body` bytes are sent as they are, anything else as JSON."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, text = r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode("utf-8")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class ServerProcess:
    """`python -m ms_gpt.serve --model DIR ...` on 127.0.0.1:<free port>; use as a context manager."""

    def __init__(self, model_dir: str, *args: str, log_dir: str, startup_timeout: float = 300.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(log_dir, f"serve-{self.port}.log")
        env = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ms_gpt.serve", "--model", model_dir, "--port", str(self.port), *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_dir)
        try:
            self._wait_healthy(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen_503 = False
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ms_gpt.serve exited with {self.process.returncode}:\n{self.log()}")
            status, _ = http_get(self.url + "/health", timeout=5)
            if status == 200:
                self.saw_503 = seen_503
                return
            seen_503 |= status == 503
            time.sleep(0.2)
        raise TimeoutError(f"ms_gpt.serve not healthy after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-5000:]

    def metrics(self) -> dict:
        """The /metrics samples without labels: {name: value}."""
        status, text = http_get(self.url + "/metrics")
        assert status == 200, text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
