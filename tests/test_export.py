"""`python -m ms_gpt.export` and the MindIR runner: the exported graphs, reloaded with `mindspore.load` +
`nn.GraphCell` alone, decode the same ids as generate() (greedy at every window gear, batch 1 and a left-padded
batch; seeded sampling; eos, min_new_tokens and repetition penalty), for GPT-2 and GPT-1, a merged LoRA adapter and a
float16 export; a classifier exports logits equal to the model's; bad input is one clear error.

The models are the tiny HF reference checkpoints (tests/fixtures/hf: n_positions 64, so the cache has 96 slots and
windows 32 and 64 are gears below the full cache). Each graph costs ~2 s to export.
"""
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from ms_gpt.exported import MindIRClassifier, MindIRGenerator, _GraphDecoder, read_export_config
from ms_gpt.exporter import export_model
from ms_gpt.generation import generate
from ms_gpt.model import GPTForSequenceClassification, GPTLMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(ROOT, "tests", "fixtures", "hf")
PEFT = os.path.join(ROOT, "tests", "fixtures", "peft")


def _ref(name):
    return dict(np.load(os.path.join(HF, name, "expected.npz")))


@pytest.fixture(scope="module")
def gpt2_export(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "gpt2")
    export_model(os.path.join(HF, "gpt2"), out, batch_sizes=[1, 2], windows=[16, 32, 100])
    return GPTLMHeadModel.from_pretrained(os.path.join(HF, "gpt2")), MindIRGenerator(out), out


def _count_windows(runner, batch):
    """Wrap the decode graphs of `batch` so that the test sees which window gear each step ran."""
    _, decode, _ = runner.graphs(batch)
    calls = Counter()
    for window, graph in list(decode.items()):
        def counted(*args, _graph=graph, _window=window):
            calls[_window] += 1
            return _graph(*args)
        decode[window] = counted
    return calls


def test_export_config_describes_every_graph(gpt2_export):
    _, runner, out = gpt2_export
    config = read_export_config(out)
    assert config["windows"] == [16, 32, 64] and config["batch_sizes"] == [1, 2] and config["max_length"] == 64
    files = sorted(g["file"] for g in config["graphs"])
    assert files == sorted(f"{kind}_b{b}{w}.mindir" for b in (1, 2)
                           for kind, w in [("prefill", "")] + [("decode", f"_w{w}") for w in (16, 32, 64)])
    assert sorted(f for f in os.listdir(out) if f.endswith(".mindir")) == files
    for graph in config["graphs"]:
        b = graph["batch_size"]
        names = [spec["name"] for spec in graph["inputs"]]
        state = [spec for spec in graph["inputs"] if spec.get("state")]
        assert [s["name"] for s in state] == [f"kv_cache.b{b}.{i}.{k}" for i in range(2) for k in ("key", "value")]
        assert all(s["shape"] == [b * 4 * 96, 16] and s["dtype"] == "float32" for s in state)
        assert all(spec["dtype"] == "int32" for spec in graph["inputs"] if not spec.get("state"))
        assert graph["outputs"] == [{"name": "greedy_ids", "shape": [b], "dtype": "int64"},
                                    {"name": "logits", "shape": [b, 1000], "dtype": "float32"}]
        if graph["kind"] == "prefill":
            assert names[:5] == ["input_ids", "position_ids", "cache_mask", "cache_position", "last_index"]
            assert graph["inputs"][0]["shape"] == [b, 32] and graph["inputs"][2]["shape"] == [b, 96]
        else:
            assert names[5] == "window_slots" and graph["inputs"][2]["shape"] == [b, graph["window"]]
    # what the loaded graphs return is what the config says
    decoder = _GraphDecoder(runner, np.array([[5, 6, 7]]), np.ones((1, 3), np.int64), max_new_tokens=4)
    for outputs in (decoder.start(), decoder.advance(np.array([8]))):
        assert [(str(o.dtype).lower(), list(o.shape)) for o in outputs] == [("int64", [1]), ("float32", [1, 1000])]


@pytest.mark.parametrize("new_tokens, window", [(5, 16), (20, 32), (56, 64)])
def test_greedy_equals_generate_at_each_window_gear(gpt2_export, new_tokens, window):
    model, runner, _ = gpt2_export
    prompt = _ref("gpt2")["prompt_ids"]  # 8 tokens: the call attends to 8 + new - 1 slots
    calls = _count_windows(runner, 1)
    got = runner.generate_ids(prompt, max_new_tokens=new_tokens, eos_token_id=[])
    np.testing.assert_array_equal(got, generate(model, prompt, max_new_tokens=new_tokens, eos_token_id=[]))
    assert got.shape == (1, 8 + new_tokens) and got.dtype == np.int64
    assert calls == {window: new_tokens - 1}
    if new_tokens == 20:  # the last gear is max_length (a call attends to at most max_length - 1 slots)
        np.testing.assert_array_equal(got, _ref("gpt2")["greedy_ids"])  # transformers' greedy ids


def test_left_padded_batch_equals_generate_and_hf(gpt2_export):
    model, runner, _ = gpt2_export
    ref = _ref("gpt2")
    prompts, mask, expected = ref["prompt_ids_batch_left"], ref["prompt_mask_batch_left"], ref["greedy_ids_batch_left"]
    new = expected.shape[1] - prompts.shape[1]
    got = runner.generate_ids(prompts, attention_mask=mask, max_new_tokens=new, pad_token_id=0)
    np.testing.assert_array_equal(got, expected)
    longer = runner.generate_ids(prompts, attention_mask=mask, max_new_tokens=45, pad_token_id=0)
    np.testing.assert_array_equal(longer, generate(model, prompts, attention_mask=mask, max_new_tokens=45,
                                                   pad_token_id=0))


def test_sampling_eos_and_penalties_equal_generate(gpt2_export):
    model, runner, _ = gpt2_export
    prompt = _ref("gpt2")["prompt_ids"]
    sampled = dict(max_new_tokens=20, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, seed=7)
    first = runner.generate_ids(prompt, **sampled)
    np.testing.assert_array_equal(first, generate(model, prompt, **sampled))
    assert not np.array_equal(first, runner.generate_ids(prompt, **dict(sampled, seed=8)))
    greedy = generate(model, prompt, max_new_tokens=20, eos_token_id=[])
    eos = int(greedy[0, 12])  # a token greedy decoding produces: generation stops there (pad after)
    for kwargs in (dict(eos_token_id=eos), dict(eos_token_id=eos, min_new_tokens=6),
                   dict(repetition_penalty=1.3, eos_token_id=[]), dict(num_return_sequences=2, do_sample=True,
                                                                       seed=3)):
        np.testing.assert_array_equal(runner.generate_ids(prompt, max_new_tokens=20, **kwargs),
                                      generate(model, prompt, max_new_tokens=20, **kwargs), err_msg=str(kwargs))


def test_bad_input_is_one_clear_error(gpt2_export):
    _, runner, out = gpt2_export
    with pytest.raises(ValueError, match=r"prompt of 60 tokens \+ 10 new tokens exceeds the exported max_length=64"):
        runner.generate_ids(np.ones((1, 60), np.int64), max_new_tokens=10)
    with pytest.raises(ValueError, match=r"batch size 3 was not exported .*\[1, 2\].*--batch_sizes 1,2,3"):
        runner.generate_ids(np.ones((3, 4), np.int64), max_new_tokens=2)
    with pytest.raises(ValueError, match="batch size 4 was not exported"):
        runner.generate_ids(np.ones((2, 4), np.int64), max_new_tokens=2, num_return_sequences=2, do_sample=True)
    with pytest.raises(ValueError, match="use_cache=False"):
        runner.generate_ids(np.ones((1, 4), np.int64), use_cache=False)
    with pytest.raises(FileNotFoundError, match="export_config.json not found"):
        MindIRGenerator(os.path.join(out, "missing"))
    with pytest.raises(ValueError, match="--max_length 65: must be in"):
        export_model(os.path.join(HF, "gpt2"), os.path.join(out, "x"), max_length=65)
    with pytest.raises(ValueError, match="--batch_sizes: 'two' is not an integer"):
        export_model(os.path.join(HF, "gpt2"), os.path.join(out, "x"), batch_sizes=["two"])


def test_gpt1_greedy_equals_generate_and_hf(tmp_path):
    out = str(tmp_path / "gpt1")
    export_model(os.path.join(HF, "openai-gpt"), out, batch_sizes=[1], windows=[32])
    model = GPTLMHeadModel.from_pretrained(os.path.join(HF, "openai-gpt"))
    runner = MindIRGenerator(out)
    ref = _ref("openai-gpt")
    prompt = ref["prompt_ids"]
    np.testing.assert_array_equal(runner.generate_ids(prompt, max_new_tokens=20), ref["greedy_ids"])
    calls = _count_windows(runner, 1)
    np.testing.assert_array_equal(runner.generate_ids(prompt, max_new_tokens=50, eos_token_id=[]),
                                  generate(model, prompt, max_new_tokens=50, eos_token_id=[]))
    assert calls == {64: 49}
    batch = np.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="batch size 2 was not exported"):
        runner.generate_ids(batch, attention_mask=mask, max_new_tokens=5)


def test_lora_adapter_exports_merged(tmp_path):
    adapter = os.path.join(PEFT, "gpt2-lora")
    out = str(tmp_path / "lora")
    cwd = os.getcwd()
    os.chdir(ROOT)  # the adapter names its base relative to the repository, as PEFT saved it
    try:
        export_model(adapter, out, batch_sizes=[1], windows=[64])
        model = GPTLMHeadModel.from_pretrained(adapter)
        base = GPTLMHeadModel.from_pretrained(os.path.join(HF, "gpt2"))
    finally:
        os.chdir(cwd)
    prompt = _ref("gpt2")["prompt_ids"]
    got = MindIRGenerator(out).generate_ids(prompt, max_new_tokens=30, eos_token_id=[])
    np.testing.assert_array_equal(got, generate(model, prompt, max_new_tokens=30, eos_token_id=[]))
    assert not np.array_equal(got, generate(base, prompt, max_new_tokens=30, eos_token_id=[]))  # the adapter counts


def test_float16_export_equals_float16_generate(tmp_path):
    out = str(tmp_path / "fp16")
    config = export_model(os.path.join(HF, "gpt2"), out, batch_sizes=[1], windows=[64], dtype="float16")
    assert config["compute_dtype"] == "float16" and config["windows"] == [64]
    model = GPTLMHeadModel.from_pretrained(os.path.join(HF, "gpt2"), compute_dtype="float16")
    prompt = _ref("gpt2")["prompt_ids"]
    np.testing.assert_array_equal(MindIRGenerator(out).generate_ids(prompt, max_new_tokens=20, eos_token_id=[]),
                                  generate(model, prompt, max_new_tokens=20, eos_token_id=[]))
    with pytest.raises(ValueError, match="--dtype 'float64'"):
        export_model(os.path.join(HF, "gpt2"), out, dtype="float64")
    (tmp_path / "fp16" / "notes.txt").write_text("kept")
    export_model(os.path.join(HF, "gpt2"), out, batch_sizes=[1], windows=[16], max_length=32)  # again, other gears
    assert sorted(os.listdir(out)) == ["decode_b1_w16.mindir", "decode_b1_w32.mindir", "export_config.json",
                                       "notes.txt", "prefill_b1.mindir"]  # the earlier gears' files are gone


def test_classifier_exports_logits_equal_to_the_model(tmp_path):
    out = str(tmp_path / "cls")
    config = export_model(os.path.join(HF, "gpt2-cls"), out, batch_sizes=[3], max_length=24)
    assert [g["file"] for g in config["graphs"]] == ["classify_b3.mindir"] and config["task"] == "sequence-classification"
    ref = dict(np.load(os.path.join(HF, "gpt2-cls", "expected.npz")))
    model = GPTForSequenceClassification.from_pretrained(os.path.join(HF, "gpt2-cls"))
    classifier = MindIRClassifier(out)
    logits = classifier(ref["input_ids"], ref["attention_mask"])  # padded to 24 inside
    expected = model(ref["input_ids"], attention_mask=ref["attention_mask"]).asnumpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, ref["logits"], rtol=1e-4, atol=1e-4)  # transformers' logits
    with pytest.raises(ValueError, match="batch size 1 was not exported"):
        classifier(ref["input_ids"][:1])
    with pytest.raises(ValueError, match="holds a sequence-classification export"):
        MindIRGenerator(out)


def test_generate_command_runs_the_exported_graphs_alone(tmp_path):
    """`python -m ms_gpt.export` then `python -m ms_gpt.generate --model OUT`: the same text as from the model
    directory, and the runner's process never imports the model code."""
    from ms_gpt.export import main as export_main
    from ms_gpt.generate import main as generate_main
    from ms_gpt.tokenizers import load_tokenizer

    source = tmp_path / "model"
    shutil.copytree(os.path.join(HF, "gpt2"), source)
    load_tokenizer("gpt2:743").save_pretrained(source)  # 256 bytes + 743 merges + <|endoftext|> = the 1000 ids
    out = tmp_path / "exported"
    config = export_main(["--model", str(source), "--output_dir", str(out), "--batch_sizes", "1",
                          "--windows", "64", "--max_length", "48"])
    assert config["tokenizer_files"] and config["max_length"] == 48
    assert json.loads((out / "export_config.json").read_text())["graphs"] == config["graphs"]
    argv = ["--prompt", "Hello world", "--max_new_tokens", "12"]
    expected = generate_main(["--model", str(source)] + argv)
    shutil.rmtree(source)  # no source weights: the runner reads only OUT
    # no model cell is built (importing the ms_gpt package imports the model module, so that alone proves nothing;
    # tests/test_layers.py checks that ms_gpt.exported imports no model code)
    script = ("import sys, ms_gpt.model as m\n"
              "def refuse(*args, **kwargs): raise AssertionError('a model cell was built')\n"
              "m.GPTModel.__init__ = refuse\n"
              "from ms_gpt.generate import main; main(sys.argv[1:])")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    result = subprocess.run([sys.executable, "-c", script, "--model", str(out)] + argv, capture_output=True,
                            text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n").endswith(expected[0]) and len(expected[0]) > len("Hello world")
    too_long = subprocess.run([sys.executable, "-m", "ms_gpt.generate", "--model", str(out), "--prompt", "Hello",
                               "--max_new_tokens", "60"], capture_output=True, text=True, env=env,
                              cwd=str(tmp_path), timeout=600)
    assert too_long.returncode == 2 and "exceeds the exported max_length=48" in too_long.stderr
