"""`python -m ms_gpt.pretrain` end to end on the bundled corpus, data parallel through msrun, and bad input."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

from conftest import ROOT

PY = sys.executable
SMALL = ["--config", "configs/shakespeare_char_seed.yaml", "--max_steps", "30", "--eval_steps", "15",
         "--eval_iters", "4", "--per_device_eval_batch_size", "32", "--logging_steps", "10", "--save_steps", "15",
         "--disable_tqdm"]


def _env():
    env = dict(os.environ, GLOG_v="3")
    env["PATH"] = os.path.dirname(PY) + os.pathsep + env.get("PATH", "")  # msrun starts workers with `python`
    return env


def _run(args, cwd=ROOT, timeout=600):
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_pretrain_cli_trains_saves_and_samples(tmp_path):
    out = tmp_path / "run"
    proc = _run([PY, "-m", "ms_gpt.pretrain", *SMALL, "--output_dir", str(out), "--sample_tokens", "40"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "---- sample ----" in proc.stdout and "val loss" in proc.stdout
    for name in ("config.json", "model.safetensors", "char_vocab.json", "loss.png", "metrics.jsonl",
                 "checkpoint-30/trainer_state.json"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0] < 4.3  # ln(65) = 4.17 at the start
    # the saved directory is a complete model: it loads and continues text
    from ms_gpt import GPTLMHeadModel
    from ms_gpt.tokenizers import load_tokenizer
    model = GPTLMHeadModel.from_pretrained(str(out))
    tok = load_tokenizer(str(out))
    assert tok.vocab_size == 65 == model.config.vocab_size
    # the held-out perplexity it reports is `python -m ms_gpt.evaluate` on the validation split (same code path)
    import re
    from ms_gpt.evaluate import main as evaluate_main
    reported = float(re.search(r"validation-split perplexity ([0-9.]+)", proc.stdout).group(1))
    result = evaluate_main(["--model", str(out), "--text_file", "data/tinyshakespeare/input.txt", "--max_length",
                            "32", "--stride", "32", "--per_device_eval_batch_size", "32", "--disable_tqdm"])
    assert (result["split"], result["train_fraction"]) == ("validation", 0.9)  # auto: the run's checkpoints say so
    assert abs(result["perplexity"] - reported) < 1e-3 and result["perplexity"] < 65


def test_compile_cache_under_python_m_reuses_only_identical_runs(tmp_path):
    """--compile_cache_dir works under `python -m` (MindSpore 2.7 read argv[0] = "-m" and failed), a repeated run
    loads its graphs and trains identically, and another model shape gets its own cache folder (MindSpore alone would
    hand the 2-layer run the 1-layer run's graphs) and trains as it does without the cache."""
    cache = tmp_path / "cache"
    base = [PY, "-m", "ms_gpt.pretrain", "--max_steps", "2", "--eval_iters", "1", "--sample_tokens", "0",
            "--disable_tqdm", "--n_layer", "1", "--n_embd", "32", "--n_head", "2"]
    runs = {"first": ["--compile_cache_dir", str(cache)], "again": ["--compile_cache_dir", str(cache)],
            "deeper": ["--n_layer", "2", "--compile_cache_dir", str(cache)], "deeper_uncached": ["--n_layer", "2"]}
    losses = {}
    for name, extra in runs.items():
        proc = _run(base + extra + ["--output_dir", str(tmp_path / name)])
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["val_loss"] for r in records if "val_loss" in r][-1]
        if name == "first":
            assert len(list(cache.glob("*/rank_0/graph_cache/compile_cache_*.mindir"))) >= 2
    assert len(list(cache.iterdir())) == 2
    assert losses["again"] == losses["first"]
    assert losses["deeper"] == losses["deeper_uncached"] != losses["first"]


def test_pretrain_bad_input_is_one_clear_error(tmp_path):
    proc = _run([PY, "-m", "ms_gpt.pretrain", "--train_file", str(tmp_path / "nope.txt"),
                 "--output_dir", str(tmp_path / "o")])
    assert proc.returncode == 2 and "nope.txt" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run([PY, "-m", "ms_gpt.pretrain", "--n_layers", "3"])
    assert proc.returncode == 2 and "unknown option 'n_layers'" in proc.stderr and "n_layer" in proc.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    proc = _run([PY, "-m", "ms_gpt.pretrain", "--train_file", str(empty), "--output_dir", str(tmp_path / "o")])
    assert proc.returncode == 2 and "empty.txt: the file is empty" in proc.stderr
    assert not (tmp_path / "o" / "model.safetensors").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_msrun_two_workers_equal_one_process_at_double_batch(tmp_path):
    common = ["--config", "configs/shakespeare_char_seed.yaml", "--max_steps", "6", "--eval_steps", "0",
              "--eval_iters", "2", "--per_device_eval_batch_size", "8", "--logging_steps", "3", "--save_steps", "0",
              "--sample_tokens", "0", "--disable_tqdm"]
    dp = _run([os.path.join(os.path.dirname(PY), "msrun"), "--worker_num=2", "--local_worker_num=2",
               f"--master_port={_free_port()}", "--join=True", f"--log_dir={tmp_path / 'logs'}",
               "ms_gpt/pretrain.py", *common, "--per_device_train_batch_size", "4", "--output_dir",
               str(tmp_path / "dp")])
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("worker_*.log"))
    assert dp.returncode == 0, logs[-3000:]
    single = _run([PY, "-m", "ms_gpt.pretrain", *common, "--per_device_train_batch_size", "8", "--output_dir",
                   str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_file(str(tmp_path / "dp" / "model.safetensors"))
    b = load_file(str(tmp_path / "single" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst < 1e-4  # averaged gradients of two half batches == gradient of the whole batch
    # only rank 0 wrote: one metrics file, lines not duplicated
    lines = (tmp_path / "dp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)] == [3, 6]
