"""LoRA adapters in PEFT's format (both directions, against adapters and logits made by HF peft), training only the
adapter with the compiled engine, merging, gradient checkpointing, and the bad-input errors."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import FIXTURES, ROOT

PEFT = os.path.join(FIXTURES, "peft")
BASE_LM = "tests/fixtures/hf/gpt2"  # as the adapters name it: relative to the repository root
ATOL = 1e-4


def _lm_base():
    from ms_gpt import GPTLMHeadModel

    return GPTLMHeadModel.from_pretrained(os.path.join(ROOT, BASE_LM))


def test_adapter_made_by_peft_gives_peft_logits_and_merges(tmp_path):
    from ms_gpt import GPTForSequenceClassification, GPTLMHeadModel
    from ms_gpt.lora import merge_and_save, merge_lora

    ref = np.load(os.path.join(PEFT, "gpt2-lora", "expected.npz"))
    model = GPTLMHeadModel.from_pretrained(os.path.join(PEFT, "gpt2-lora"))  # base resolved from the adapter
    logits = model(ref["input_ids"]).asnumpy()
    base = np.load(os.path.join(ROOT, BASE_LM, "expected.npz"))["logits"]
    assert np.abs(ref["logits"] - base).max() > 0.1  # the adapter matters
    assert np.abs(logits - ref["logits"]).max() < ATOL
    trainable = {p.name for p in model.trainable_params()}
    assert len(trainable) == 2 * 4 * 2 and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert "transformer.h.1.mlp.c_fc.lora_B.weight" in trainable  # c_proj matched attn.c_proj and mlp.c_proj too
    assert "transformer.h.0.mlp.c_proj.lora_A.weight" in trainable
    # merged: a plain model with PEFT's merge_and_unload logits
    merged = merge_lora(model)
    assert not any("lora" in n for n, _ in merged.parameters_and_names())
    assert np.abs(merged(ref["input_ids"]).asnumpy() - ref["logits_merged"]).max() < ATOL
    merge_and_save(os.path.join(PEFT, "gpt2-lora"), str(tmp_path / "merged"))
    assert sorted(os.listdir(tmp_path / "merged")) == ["config.json", "model.safetensors"]
    again = GPTLMHeadModel.from_pretrained(str(tmp_path / "merged"))
    assert np.abs(again(ref["input_ids"]).asnumpy() - logits).max() < ATOL
    # the recipes' save: the adapter, or with merge_lora the merged full model replacing it in the same directory
    from ms_gpt.lora import save_model
    from ms_gpt.recipes.pretrain import PretrainArguments

    out = tmp_path / "run"
    save_model(model, PretrainArguments(output_dir=str(out)))
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    save_model(model, PretrainArguments(output_dir=str(out), merge_lora=True))
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert np.abs(GPTLMHeadModel.from_pretrained(str(out))(ref["input_ids"]).asnumpy() - logits).max() < ATOL

    ref = np.load(os.path.join(PEFT, "gpt2-cls-lora", "expected.npz"))
    cls = GPTForSequenceClassification.from_pretrained(os.path.join(PEFT, "gpt2-cls-lora"))
    out = cls(ref["input_ids"], attention_mask=ref["attention_mask"]).asnumpy()
    assert np.abs(out - ref["logits"]).max() < ATOL
    assert {p.name for p in cls.trainable_params()} >= {"score.weight"}  # modules_to_save stays trainable


def test_adapter_written_by_ms_gpt_is_the_one_peft_verified(tmp_path):
    """tests/fixtures/peft/ms-gpt2-lora was written by ms_gpt and loaded by peft on the HF base
    (make_peft_reference.py stores peft's logits). Here ms_gpt writes the same adapter again: files equal to the
    committed ones (config and every tensor), and ms_gpt's logits equal the ones peft computed from them."""
    from ms_gpt import GPTLMHeadModel
    from ms_gpt.lora import apply_lora

    committed = os.path.join(PEFT, "ms-gpt2-lora")
    model = _lm_base()
    apply_lora(model, 4, 16, 0.0, ["c_attn", "c_fc"], base_model_name_or_path=BASE_LM, seed=7, init_b="normal")
    model.set_train(False)
    model.save_pretrained(str(tmp_path / "a"))
    assert sorted(os.listdir(tmp_path / "a")) == ["adapter_config.json", "adapter_model.safetensors"]
    with open(tmp_path / "a" / "adapter_config.json") as f, open(os.path.join(committed, "adapter_config.json")) as g:
        assert json.load(f) == json.load(g)
    ours, theirs = load_file(str(tmp_path / "a" / "adapter_model.safetensors")), \
        load_file(os.path.join(committed, "adapter_model.safetensors"))
    assert sorted(ours) == sorted(theirs) and len(ours) == 2 * 2 * 2
    assert all(k.startswith("base_model.model.transformer.h.") for k in ours)
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    peft = np.load(os.path.join(committed, "peft_expected.npz"))
    assert np.abs(model(peft["input_ids"]).asnumpy() - peft["logits"]).max() < ATOL
    reloaded = GPTLMHeadModel.from_pretrained(committed)
    assert np.abs(reloaded(peft["input_ids"]).asnumpy() - peft["logits"]).max() < ATOL


def test_lora_r_zero_leaves_the_model_as_it_is():
    from ms_gpt.config import parse_config
    from ms_gpt.lora import apply_lora_from_args
    from ms_gpt.recipes.pretrain import PretrainArguments

    model = _lm_base()
    names = [n for n, _ in model.parameters_and_names()]
    args = parse_config(PretrainArguments, [])
    assert args.lora_r == 0 and args.lora_target_modules == ["c_attn"]
    apply_lora_from_args(model, args, BASE_LM)
    assert [n for n, _ in model.parameters_and_names()] == names
    assert [p.name for p in model.get_parameters()] == names
    assert len(model.trainable_params()) == len(names)


def test_bad_lora_input_is_one_clear_error(tmp_path):
    from ms_gpt import GPTLMHeadModel
    from ms_gpt.config import parse_config
    from ms_gpt.lora import apply_lora, load_adapter
    from ms_gpt.recipes.finetune import FinetuneArguments

    with pytest.raises(ValueError, match="lora_r must be a non-negative integer.*-1"):
        parse_config(FinetuneArguments, ["--lora_r=-1"])
    from ms_gpt.recipes.finetune import check_arguments

    with pytest.raises(ValueError, match="use trainer: ms_gpt"):
        check_arguments(parse_config(FinetuneArguments, ["--lora_r=2", "--trainer=mindnlp", "--train_file=x.csv"]))
    with pytest.raises(ValueError, match=r"\['q_proj'\] names no module.*c_attn, c_proj, c_fc"):
        apply_lora(_lm_base(), 4, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="names LayerNorm modules"):
        apply_lora(_lm_base(), 4, target_modules=["ln_1"])
    with pytest.raises(ValueError, match=r"\['c_atn'\] name no module"):
        apply_lora(_lm_base(), 4, target_modules=["c_attn", "c_atn"])
    adapter = os.path.join(PEFT, "ms-gpt2-lora")
    # model_type: the GPT-1 fixture has the same module names and shapes; the adapter records its base's type
    gpt1 = GPTLMHeadModel.from_pretrained(os.path.join(FIXTURES, "hf", "openai-gpt"))
    with pytest.raises(ValueError, match="trained on a gpt2 model, but its base is a openai-gpt model"):
        load_adapter(gpt1, adapter)
    # shapes: a base with another width, named by the adapter's base_model_name_or_path
    from ms_gpt.config import preset

    other = GPTLMHeadModel(preset("tiny", n_embd=32, vocab_size=1000))
    other.save_pretrained(str(tmp_path / "base32"))
    moved = tmp_path / "adapter"
    shutil.copytree(adapter, moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "base32")
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"c_attn.lora_A.weight has shape \(4, 64\), the base gpt2 model needs "
                                         r"\(4, 32\)"):
        GPTLMHeadModel.from_pretrained(str(moved))
    cfg["base_model_name_or_path"] = str(tmp_path / "nowhere")
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="cannot load its base model"):
        GPTLMHeadModel.from_pretrained(str(moved))
    cfg.update(base_model_name_or_path=BASE_LM, use_dora=True)
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_dora=True is not supported"):
        GPTLMHeadModel.from_pretrained(str(moved))
    from ms_gpt import GPTForSequenceClassification

    with pytest.raises(ValueError, match="task_type='SEQ_CLS' is an adapter for GPTForSequenceClassification"):
        GPTLMHeadModel.from_pretrained(os.path.join(PEFT, "gpt2-cls-lora"))
    del GPTForSequenceClassification


def _grads(model, ids, labels):
    import mindspore as ms
    from mindspore import nn

    from ms_gpt.device import compiled

    class Grads(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.model = model
            self.weights = ms.ParameterTuple(model.trainable_params())

        def forward(self, x, y):
            return self.model(x, labels=y)[0]

        def construct(self, x, y):
            return ms.value_and_grad(self.forward, None, self.weights)(x, y)

    loss, grads = compiled(Grads())(ms.Tensor(ids), ms.Tensor(labels))
    return float(loss.asnumpy()), [g.asnumpy() for g in grads]


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    """The whole model's gradients (the LoRA + checkpointing combination runs in the CLI test below)."""
    lora = False
    from ms_gpt import GPTLMHeadModel
    from ms_gpt.lora import apply_lora
    from ms_gpt.model import Block

    ids = np.load(os.path.join(ROOT, BASE_LM, "expected.npz"))["input_ids"].astype(np.int32)
    results = []
    for checkpointing in (False, True):
        model = GPTLMHeadModel.from_pretrained(os.path.join(ROOT, BASE_LM), resid_pdrop=0.0, embd_pdrop=0.0,
                                               attn_pdrop=0.0)  # train mode without randomness
        if lora:
            apply_lora(model, 4, 8, 0.0, ["c_attn", "c_proj"], seed=3, init_b="normal")
        model.set_train(True)
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert all(c._has_config_recompute for c in model.transformer.h if isinstance(c, Block))
        results.append(_grads(model, ids, ids))
    (loss0, g0), (loss1, g1) = results
    assert abs(loss0 - loss1) < 1e-6 and len(g0) == len(g1) == (12 if lora else 28)
    assert max(float(np.abs(a - b).max()) for a, b in zip(g0, g1)) < 1e-6
    assert min(float(np.abs(a).max()) for a in g0) > 0  # every gradient is non-trivial


def test_lora_runs_from_the_cli_and_cannot_resume_as_a_full_run(tmp_path):
    """pretrain a tiny base, then a LoRA run on it (gradient checkpointing on) from `python -m ms_gpt.pretrain`:
    the output is a PEFT directory holding only adapter weights; the checkpoint's optimizer state covers only the
    adapter; resuming that checkpoint as a full run is refused."""
    import mindspore as ms

    from ms_gpt import GPTLMHeadModel

    env = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT)
    common = [sys.executable, "-m", "ms_gpt.pretrain", "--config", "configs/shakespeare_char_seed.yaml",
              "--n_layer", "2", "--eval_iters", "1", "--sample_tokens", "0", "--disable_tqdm", "--logging_steps", "1",
              "--per_device_eval_batch_size", "16", "--eval_steps", "0"]
    base = tmp_path / "base"
    proc = subprocess.run(common + ["--max_steps", "3", "--output_dir", str(base)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "lora"
    proc = subprocess.run(common + ["--max_steps", "4", "--init_from", str(base), "--output_dir", str(run),
                                    "--lora_r", "2", "--lora_target_modules", "c_attn,c_fc", "--lora_alpha", "4",
                                    "--gradient_checkpointing", "true", "--learning_rate", "0.01"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"adapter_config.json", "adapter_model.safetensors", "char_vocab.json"} <= set(os.listdir(run))
    assert not (run / "config.json").exists() and not (run / "model.safetensors").exists()
    cfg = json.loads((run / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base) and cfg["r"] == 2 and cfg["fan_in_fan_out"] is True
    assert cfg["task_type"] == "CAUSAL_LM" and cfg["target_modules"] == ["c_attn", "c_fc"]
    weights = load_file(str(run / "adapter_model.safetensors"))
    assert len(weights) == 2 * 2 * 2 and all(".lora_" in k for k in weights)
    assert any(np.abs(v).max() > 0 for k, v in weights.items() if "lora_B" in k)  # B trained away from zero
    state = ms.load_checkpoint(str(run / "checkpoint-4" / "training_state.ckpt"))
    moments = sorted(k for k in state if k.startswith("moment1."))
    assert len(moments) == 8 and all(".lora_" in k for k in moments)
    # the adapter changes the model: the adapter dir loads on its base, differently from the base alone
    ids = np.arange(1, 17, dtype=np.int32).reshape(1, 16)
    tuned = GPTLMHeadModel.from_pretrained(str(run))(ids).asnumpy()
    plain = GPTLMHeadModel.from_pretrained(str(base))(ids).asnumpy()
    assert np.abs(tuned - plain).max() > 1e-4
    proc = subprocess.run([sys.executable, "-m", "ms_gpt.generate", "--model", str(run), "--prompt", "ROMEO:",
                           "--max_new_tokens", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("ROMEO:"), proc.stderr[-2000:]
    # fine-tuning: the classification head trains and is saved with the adapter (PEFT's modules_to_save), and so is
    # the token table, which grew by the three task tokens
    from ms_gpt import GPTForSequenceClassification
    from ms_gpt.recipes.finetune import FinetuneArguments, finetune

    rt = os.path.join(ROOT, "data", "sentiment-rt", "rotten_tomatoes_corpus_full.csv.bz2")
    tuned_dir = tmp_path / "cls"
    finetune(FinetuneArguments(model_name_or_path=str(base), train_file=rt, text_column="text",
                               label_column="category", label_list=["fresh", "rotten"], drop_labels=["plot"],
                               max_train_samples=64, max_seq_length=32, padding="max_length", max_steps=3,
                               per_device_train_batch_size=16, evaluation_strategy="no", save_strategy="no",
                               load_best_model_at_end=False, disable_tqdm=True, output_dir=str(tuned_dir),
                               lora_r=2, learning_rate=0.01), log=lambda *a: None)
    weights = load_file(str(tuned_dir / "adapter_model.safetensors"))
    assert weights["base_model.model.score.weight"].shape == (2, 64)
    assert weights["base_model.model.transformer.wte.weight"].shape == (65 + 3, 64)
    assert len([k for k in weights if ".lora_" in k]) == 2 * 2
    cfg = json.loads((tuned_dir / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and cfg["modules_to_save"] == ["score", "wte"]
    cls = GPTForSequenceClassification.from_pretrained(str(tuned_dir))
    assert cls.config.vocab_size == 68 and cls.config.num_labels == 2
    assert np.array_equal(cls.score.weight.asnumpy(), weights["base_model.model.score.weight"])
    proc = subprocess.run(common + ["--max_steps", "6", "--init_from", str(base), "--output_dir", str(run),
                                    "--resume_from_checkpoint", str(run / "checkpoint-4")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "written by a LoRA run" in proc.stderr and "lora_r" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_adapter_directory_loads_without_importing_ms_gpt_lora():
    """Checkpoint I/O does not know adapters; ms_gpt.lora registers the PEFT layout with it, and importing ms_gpt
    imports lora: from_pretrained(adapter_dir) in a fresh process that never names ms_gpt.lora gives peft's logits."""
    code = ("import sys, numpy as np\n"
            "from ms_gpt import GPTLMHeadModel\n"
            "from ms_gpt.checkpoint import registered_layouts\n"
            "assert [layout.name for layout in registered_layouts()] == ['peft_lora'], registered_layouts()\n"
            f"ref = np.load({os.path.join(PEFT, 'gpt2-lora', 'expected.npz')!r})\n"
            f"model = GPTLMHeadModel.from_pretrained({os.path.join(PEFT, 'gpt2-lora')!r})\n"
            "print(float(np.abs(model(ref['input_ids']).asnumpy() - ref['logits']).max()))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) < ATOL
