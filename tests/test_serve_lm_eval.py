"""lm-evaluation-harness end to end through `python -m ms_gpt.serve`: `lm_eval --model local-completions` against a
real server process and `lm_eval --model hf` on the same checkpoint (a random tiny GPT-2 over the GPT-2 BPE
vocabulary, saved by ms_gpt in the HF layout) evaluate the two local tasks of tests/fixtures/lm_eval (a 12-item
multiple-choice task and an 8-item LAMBADA-style last-word `loglikelihood` task): every item's per-choice
log-likelihood agrees within 1e-3, its greedy flags and chosen answer are equal, and so is each task's accuracy.

lm-eval lives in the reference venv (`.venv-ref`, `make ref`; pinned in benchmarks/requirements-ref.txt) with torch;
without it (CI) the test is skipped with the reason.
"""
import glob
import json
import os
import subprocess

import numpy as np
import pytest

from serve_process import ROOT, ServerProcess, make_model_dir

TASKS = os.path.join(ROOT, "tests", "fixtures", "lm_eval")
NAMES = ("ms_gpt_tiny_mc", "ms_gpt_tiny_last_word")


def _lm_eval_binary():
    for root in (ROOT, os.path.join(os.path.dirname(ROOT), "..", "main")):  # a git worktree's main checkout too
        path = os.path.normpath(os.path.join(root, ".venv-ref", "bin", "lm_eval"))
        if os.path.exists(path):
            return path
    return None


LM_EVAL = _lm_eval_binary()
pytestmark = pytest.mark.skipif(LM_EVAL is None, reason="lm-eval is not installed in .venv-ref (`make ref`)")


def run_lm_eval(model: str, model_args: str, output: str, batch_size: int = 4) -> dict:
    """{task: {doc_id: sample}} of one lm_eval run (--log_samples), offline, from the tasks' folder."""
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONPATH", None)
    result = subprocess.run([LM_EVAL, "--model", model, "--model_args", model_args, "--tasks", ",".join(NAMES),
                             "--include_path", ".", "--batch_size", str(batch_size), "--log_samples",
                             "--output_path", output] + (["--device", "cpu"] if model == "hf" else []),
                            cwd=TASKS, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    samples = {}
    for name in NAMES:
        (path,) = glob.glob(os.path.join(output, "*", f"samples_{name}_*.jsonl"))
        with open(path, encoding="utf-8") as f:
            samples[name] = {s["doc_id"]: s for s in map(json.loads, f)}
    return samples


def test_lm_eval_through_the_server_equals_lm_eval_hf(tmp_path):
    model_dir = make_model_dir(str(tmp_path / "model"), vocabulary="gpt2", n_positions=128, chat_template=False)
    hf = run_lm_eval("hf", f"pretrained={model_dir},max_length=128", str(tmp_path / "hf"))
    with ServerProcess(model_dir, "--served_model_name", "tiny", "--max_batch_size", "4",
                       log_dir=str(tmp_path)) as server:
        served = run_lm_eval("local-completions",
                             f"model=tiny,base_url={server.url}/v1/completions,tokenizer={model_dir},"
                             "max_length=128,num_concurrent=1", str(tmp_path / "served"))
    for name in NAMES:
        assert sorted(served[name]) == sorted(hf[name]) and len(hf[name]) >= 8
        for doc_id, want in hf[name].items():
            got = served[name][doc_id]
            want_ll = np.array([float(r[0]) for r in want["filtered_resps"]])
            got_ll = np.array([float(r[0]) for r in got["filtered_resps"]])
            np.testing.assert_allclose(got_ll, want_ll, atol=1e-3, rtol=0, err_msg=f"{name} item {doc_id}")
            assert [r[1] for r in got["filtered_resps"]] == [r[1] for r in want["filtered_resps"]]  # greedy flags
            assert got["acc"] == want["acc"]
            if name == "ms_gpt_tiny_mc":  # the chosen answer, not only its correctness
                assert int(np.argmax(got_ll)) == int(np.argmax(want_ll))
        # the aggregated accuracy follows from the per-item ones
        assert np.mean([s["acc"] for s in served[name].values()]) == np.mean([s["acc"] for s in hf[name].values()])
