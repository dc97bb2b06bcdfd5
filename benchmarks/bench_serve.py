"""`python -m ms_gpt.serve` against `transformers serve --continuous-batching`, printed as JSON lines (one run).

Both servers serve the same GPT-2 124M HF directory (`--model`, else random weights saved in HF layout with the
GPT-2 tokenizer) on 127.0.0.1, one after the other (never both in memory), and are driven by the same load through
the official `openai` client: at each concurrency C (`--concurrency`, default 1, 8, 16), C client threads each send
`--requests_per_client` streamed greedy completions of `--max_tokens` tokens (prompts from a fixed set of 16, of
7 to 40 tokens). Figures, with vLLM's `benchmark_serving` definitions:
- output_tokens_per_s: completion tokens of all requests / wall time from the first send to the last token;
- ttft_ms: time to the first streamed token, p50 and p99 over requests;
- tpot_ms: per request (latency - ttft) / (completion tokens - 1), p50 and p99 (the decode step a client sees).
`same_greedy_text`: the greedy texts of both servers agree, prompt by prompt (at concurrency 1 and at the
largest concurrency).

Afterwards (servers stopped) the decode step is set against MindSpore's MatMul floor for as many rows: the median
time of one compiled graph doing only the weight products of one step (`bench_scale.weight_read_floor_ms`);
`floor_fraction` = floor / ms_gpt's TPOT p50 at that concurrency (1.0 = the step costs no more than its MatMuls).

Targets (issue 24), in one run: ms_gpt >= 1.5x transformers serve's output tokens/s at concurrency 8 and >= 2x at
16; the decode step >= 80% of the floor at 8 and 16 rows; ms_gpt at 8 >= 3x its own concurrency 1.
Likelihood (`--likelihood N`, issue 27): N of lm-eval's `loglikelihood` requests (LAMBADA-style: a last word after
its context, lm-eval's batch size `--likelihood_batch_size`), timed inside lm-eval (benchmarks/lm_eval_likelihood.py,
reference venv) once through ms_gpt.serve (`--model local-completions`: token-id prompts with echo + logprobs) and
once through lm-eval's own `hf` model on the same checkpoint: items/s of each, their ratio, and the largest
difference between the two models' log-likelihoods (`--likelihood_only` skips the generation load).

The torch side runs from the reference venv (`make ref`; or `--ref_python`); the machine is shared with whatever
else runs: compare ratios of one run and read `load_average`.

    python benchmarks/bench_serve.py [--model DIR] [--concurrency 1,8,16] [--max_tokens 32] [--likelihood 64]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

REF_PYTHON = os.path.join(ROOT, ".venv-ref", "bin", "python")
TARGETS = {"vs_hf_c8": 1.5, "vs_hf_c16": 2.0, "floor_fraction": 0.8, "c8_vs_c1": 3.0}
PROMPTS = [
    "The history of the city begins in the early middle ages, when",
    "In a shocking finding, scientists discovered a herd of unicorns living in a remote valley",
    "Once upon a time",
    "The best way to learn a new programming language is",
    "Here is a recipe for a simple tomato soup that takes less than thirty minutes to cook and needs only",
    "The stock market fell sharply on Monday after",
    "My favourite book is",
    "A short guide to the night sky: the brightest star you can see from the northern hemisphere is",
    "The weather today",
    "When the train finally arrived at the station, the passengers",
    "The main difference between a violin and a viola is",
    "Breaking news: the council voted tonight to",
    "In the beginning the universe was created. This has made a lot of people very angry and been widely "
    "regarded as a bad move. Later,",
    "Dear diary,",
    "The three laws of robotics state that",
    "Football is a game of two halves, and in the second one",
]


def emit(record: dict) -> dict:
    record["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
    return record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(directory: str) -> str:
    """Random GPT-2 124M in HF layout (config.json + model.safetensors) with the GPT-2 tokenizer files."""
    from ms_gpt.config import preset
    from ms_gpt.device import setup_device
    from ms_gpt.model import GPTLMHeadModel
    from ms_gpt.tokenizers import load_tokenizer

    setup_device("CPU", seed=0)
    path = os.path.join(directory, "gpt2-random")
    GPTLMHeadModel(preset("gpt2")).save_pretrained(path)
    load_tokenizer("gpt2").save_pretrained(path)
    return path


class Server:
    """A server subprocess on 127.0.0.1, stopped (SIGINT, then kill) on exit."""

    def __init__(self, kind: str, model: str, opts):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if kind == "ms_gpt":
            cmd = [sys.executable, "-m", "ms_gpt.serve", "--model", model, "--port", str(self.port),
                   "--max_batch_size", str(max(opts.concurrency)), "--served_model_name", "gpt2"]
            env = dict(os.environ, PYTHONPATH=ROOT)
            self.model_name = "gpt2"
        else:
            serve = os.path.join(os.path.dirname(opts.ref_python), "transformers")
            cmd = [serve, "serve", "--continuous-batching", "--host", "127.0.0.1", "--port", str(self.port),
                   "--log-level", "warning", model]
            # MindSpore's runtime setenv()s OMP_NUM_THREADS=1 in C; let torch use its default
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            self.model_name = model
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.started = time.perf_counter()

    def wait_ready(self, timeout: float = 900) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read().decode(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.url} not healthy after {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def one_request(client, model: str, prompt: str, max_tokens: int) -> dict:
    start = time.perf_counter()
    first, text, chunks, usage = None, [], 0, None
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.text:
                if first is None:
                    first = time.perf_counter()
                text.append(choice.text)
                chunks += 1
    end = time.perf_counter()
    tokens = usage if usage is not None else chunks
    return {"prompt": prompt, "text": "".join(text), "tokens": tokens, "ttft": (first or end) - start,
            "latency": end - start, "start": start, "end": end}


def drive(server: Server, concurrency: int, opts) -> tuple[dict, list]:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)
    results: list = []
    errors: list = []
    lock = threading.Lock()

    def worker(k: int):
        for j in range(opts.requests_per_client):
            prompt = PROMPTS[(k * opts.requests_per_client + j) % len(PROMPTS)]
            try:
                r = one_request(client, server.model_name, prompt, opts.max_tokens)
            except Exception as err:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(err))
                continue
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not results:
        raise RuntimeError(f"every request failed: {errors[:3]}")
    duration = max(r["end"] for r in results) - min(r["start"] for r in results)
    tpot = [(r["latency"] - r["ttft"]) / (r["tokens"] - 1) for r in results if r["tokens"] > 1]
    ttft = [r["ttft"] for r in results]
    record = {"concurrency": concurrency, "requests": len(results), "errors": len(errors),
              "output_tokens": int(sum(r["tokens"] for r in results)),
              "output_tokens_per_s": sum(r["tokens"] for r in results) / duration,
              "ttft_ms_p50": 1000 * float(np.percentile(ttft, 50)), "ttft_ms_p99": 1000 * float(np.percentile(ttft, 99)),
              "tpot_ms_p50": 1000 * float(np.percentile(tpot, 50)) if tpot else None,
              "tpot_ms_p99": 1000 * float(np.percentile(tpot, 99)) if tpot else None}
    return record, results


def run_server(kind: str, model: str, opts) -> dict:
    server = Server(kind, model, opts)
    try:
        ready_s = server.wait_ready()
        import openai

        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)
        one_request(client, server.model_name, PROMPTS[0], 4)  # warm-up, not measured
        out = {"ready_s": ready_s, "by_concurrency": {}, "texts": {}}
        for c in opts.concurrency:
            record, results = drive(server, c, opts)
            emit({"bench": "serve", "server": kind, **record})
            out["by_concurrency"][c] = record
            out["texts"][c] = {r["prompt"]: r["text"] for r in results}
        return out
    finally:
        server.stop()


def run_likelihood(model: str, opts) -> dict:
    """lm-eval's loglikelihood requests through ms_gpt.serve and through lm-eval's hf model (one after the other)."""
    script = os.path.join(ROOT, "benchmarks", "lm_eval_likelihood.py")
    from ms_gpt.config import GPTConfig

    context = GPTConfig.from_json_file(os.path.join(model, "config.json")).n_positions
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTHONPATH")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    def lm_eval(lm: str, model_args: str) -> dict:
        result = subprocess.run([opts.ref_python, script, "--lm", lm, "--model_args", model_args, "--items",
                                 str(opts.likelihood), "--batch_size", str(opts.likelihood_batch_size)],
                                capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
        if result.returncode != 0:
            raise RuntimeError(f"lm_eval_likelihood.py --lm {lm} failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    opts.concurrency = [max(opts.concurrency[-1], opts.likelihood_batch_size)]  # the server's batch
    server = Server("ms_gpt", model, opts)
    try:
        server.wait_ready()
        served = lm_eval("local-completions", f"model={server.model_name},base_url={server.url}/v1/completions,"
                                              f"tokenizer={model},max_length={context},num_concurrent=1")
    finally:
        server.stop()
    hf = lm_eval("hf", f"pretrained={model},max_length={context}")
    diff = max(abs(a - b) for a, b in zip(served["loglikelihoods"], hf["loglikelihoods"]))
    return emit({"bench": "likelihood", "items": served["items"], "batch_size": opts.likelihood_batch_size,
                 "ms_gpt_serve_items_per_s": served["items_per_s"], "lm_eval_hf_items_per_s": hf["items_per_s"],
                 "ratio": served["items_per_s"] / hf["items_per_s"], "max_abs_loglikelihood_diff": f"{diff:.2e}"})  # a string: emit() rounds floats to 3 decimals


def floor_records(model_dir: str, out: dict, opts) -> list:
    """The decode step (ms_gpt's TPOT p50) against the MatMul floor of the same rows."""
    from bench_scale import weight_read_floor_ms

    from ms_gpt.device import setup_device
    from ms_gpt.model import GPTLMHeadModel

    setup_device("CPU", seed=0)
    model = GPTLMHeadModel.from_pretrained(model_dir)
    records = []
    for c in opts.concurrency:
        step = out["by_concurrency"][c]["tpot_ms_p50"]
        floor = weight_read_floor_ms(model, rows=c)
        records.append(emit({"bench": "decode_step_vs_matmul_floor", "rows": c, "step_ms": step,
                             "matmul_floor_ms": floor, "floor_fraction": floor / step if step else None}))
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="GPT-2 HF directory served by both (default: random GPT-2 124M weights, saved once)")
    parser.add_argument("--concurrency", default="1,8,16", help="client counts, comma-separated (default: 1,8,16)")
    parser.add_argument("--max_tokens", type=int, default=32, help="greedy tokens per request (default: 32)")
    parser.add_argument("--requests_per_client", type=int, default=2,
                        help="requests each client sends one after the other (default: 2)")
    parser.add_argument("--servers", default="ms_gpt,transformers",
                        help="which servers to run, comma-separated: ms_gpt, transformers (default: both)")
    parser.add_argument("--ref_python", default=REF_PYTHON,
                        help="python of the reference venv whose `transformers serve` runs (default: .venv-ref)")
    parser.add_argument("--no_floor", action="store_true", help="skip the decode step vs MatMul floor measurement")
    parser.add_argument("--likelihood", type=int, default=0,
                        help="also time N lm-eval loglikelihood requests through ms_gpt.serve vs lm-eval's hf model "
                             "(needs lm-eval in --ref_python's venv; default: 0 = skip)")
    parser.add_argument("--likelihood_batch_size", type=int, default=8,
                        help="lm-eval's batch size for --likelihood (prompts per request; default: 8)")
    parser.add_argument("--likelihood_only", action="store_true",
                        help="run only the --likelihood measurement (no generation load, no floor)")
    opts = parser.parse_args(argv)
    try:
        opts.concurrency = sorted({int(c) for c in opts.concurrency.split(",")})
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, got {opts.concurrency!r}")
    if opts.concurrency[0] < 1 or opts.max_tokens < 2 or opts.requests_per_client < 1:
        parser.error("--concurrency >= 1, --max_tokens >= 2 and --requests_per_client >= 1 are required")
    servers = [s.strip() for s in opts.servers.split(",") if s.strip()]
    if not servers or any(s not in ("ms_gpt", "transformers") for s in servers):
        parser.error(f"--servers takes ms_gpt and/or transformers, got {opts.servers!r}")
    if opts.likelihood_only and opts.likelihood < 1:
        parser.error("--likelihood_only needs --likelihood N (N >= 1)")
    if opts.likelihood and not os.path.exists(opts.ref_python):
        parser.error(f"--ref_python {opts.ref_python} does not exist (run `make ref`) for --likelihood")
    if "transformers" in servers and not opts.likelihood_only and not os.path.exists(opts.ref_python):
        parser.error(f"--ref_python {opts.ref_python} does not exist (run `make ref`, or --servers ms_gpt)")

    with tempfile.TemporaryDirectory() as tmp:
        model = opts.model or make_checkpoint(tmp)
        import platform

        emit({"bench": "setup", "model": opts.model or "random GPT-2 124M (HF layout)", "cpu": platform.processor()
              or platform.machine(), "cores": os.cpu_count(), "concurrency": opts.concurrency,
              "max_tokens": opts.max_tokens, "requests_per_client": opts.requests_per_client})
        if opts.likelihood_only:
            run_likelihood(model, opts)
            return 0
        results = {kind: run_server(kind, model, opts) for kind in servers}
        summary: dict = {"bench": "serve_summary", "targets": TARGETS}
        if "ms_gpt" in results:
            ms = results["ms_gpt"]["by_concurrency"]
            if 1 in ms and 8 in ms:
                summary["c8_vs_c1"] = ms[8]["output_tokens_per_s"] / ms[1]["output_tokens_per_s"]
            summary["ms_gpt_ready_s"] = results["ms_gpt"]["ready_s"]
        if len(results) == 2:
            ms, hf = results["ms_gpt"], results["transformers"]
            for c in opts.concurrency:
                summary[f"vs_hf_c{c}"] = (ms["by_concurrency"][c]["output_tokens_per_s"]
                                          / hf["by_concurrency"][c]["output_tokens_per_s"])
            agree = {}
            for c in (opts.concurrency[0], opts.concurrency[-1]):
                a, b = ms["texts"][c], hf["texts"][c]
                agree[c] = sum(a[p] == b[p] for p in a if p in b) / max(1, len(set(a) & set(b)))
            summary["same_greedy_text"] = all(v == 1.0 for v in agree.values())
            c = opts.concurrency[0]
            differ = [p for p in ms["texts"][c] if p in hf["texts"][c] and ms["texts"][c][p] != hf["texts"][c][p]]
            if differ:
                summary["first_difference"] = {"prompt": differ[0], "ms_gpt": ms["texts"][c][differ[0]],
                                               "transformers": hf["texts"][c][differ[0]]}
            summary["same_greedy_text_fraction"] = agree
            summary["transformers_ready_s"] = hf["ready_s"]
        if "ms_gpt" in results and not opts.no_floor:
            for r in floor_records(model, results["ms_gpt"], opts):
                summary[f"floor_fraction_{r['rows']}_rows"] = r["floor_fraction"]
        if opts.likelihood:
            summary["likelihood_vs_hf"] = run_likelihood(model, opts)["ratio"]
        emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
