"""The training engine: optimizer and schedule against closed forms, one compile per run, exact resume, NaN report,
gradient accumulation, loss scaling, run-config parsing."""
import json
import math
import os

import numpy as np
import mindspore as ms
import pytest
from mindspore import Parameter, Tensor

from ms_gpt.config import GPTConfig, TrainingArguments, parse_config
from ms_gpt.data.lm import RandomWindows, eval_batches, split_ids
from ms_gpt.engine.optim import AdamW, lr_schedule
from ms_gpt.engine.trainer import Trainer, list_checkpoints
from ms_gpt.model import GPTLMHeadModel, NextTokenLoss

TINY = dict(vocab_size=20, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0)


def _stream(n=4000, seed=0):
    # a learnable stream: a noisy repeating pattern over 20 symbols
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(20), n // 20 + 1)[:n]
    noise = rng.random(n) < 0.1
    return np.where(noise, rng.integers(0, 20, n), base).astype(np.int32)


def _trainer(tmp_path, steps=30, fail_after=None, resume=None, accum=1, batch=8, seed=0, fp16=False, **kw):
    ms.set_seed(seed)
    lm = GPTLMHeadModel(GPTConfig(**TINY, compute_dtype="float16" if fp16 else "float32"))
    train, val = split_ids(_stream())
    source = RandomWindows(train, 12, batch, seed=seed)
    if fail_after is not None:
        real_next = source.next_batch
        calls = {"n": 0}

        def next_batch():
            calls["n"] += 1
            if calls["n"] > fail_after:
                raise KeyboardInterrupt("killed")
            return real_next()
        source.next_batch = next_batch
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, learning_rate=3e-3, logging_steps=1,
                             eval_steps=10, eval_iters=4, save_steps=10, save_total_limit=2, disable_tqdm=True,
                             resume_from_checkpoint=resume, gradient_accumulation_steps=accum,
                             per_device_train_batch_size=batch, warmup_steps=5, lr_scheduler_type="cosine",
                             weight_decay=0.1, fp16=fp16, **kw)

    def val_batches():
        return eval_batches(val, 12, 8, 4, seed=7)
    trainer = Trainer(NextTokenLoss(lm), args, source, {"val": val_batches}, export_model=lm)
    return trainer, lm


def test_lr_schedule_closed_form():
    lr = lr_schedule(1.0, 110, warmup_steps=10, kind="cosine", min_learning_rate=0.1)
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert lr[10] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=1e-6)
    assert lr[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)), rel=1e-5)
    lin = lr_schedule(2.0, 4, kind="linear")
    np.testing.assert_allclose(lin, [2.0, 1.5, 1.0, 0.5], rtol=1e-6)
    assert (lr_schedule(0.5, 3) == 0.5).all()
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        lr_schedule(1.0, 3, kind="exp")


def test_adamw_matches_pytorch_formula():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype(np.float32)
    b0 = rng.normal(size=(4,)).astype(np.float32)
    w, b = Parameter(Tensor(w0), name="w"), Parameter(Tensor(b0), name="b")
    schedule = lr_schedule(1e-2, 6, 2, "cosine", 1e-3)
    opt = AdamW([w, b], schedule, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)

    @ms.jit
    def step(gw, gb):
        return opt((gw, gb))
    ref = [w0.astype(np.float64), b0.astype(np.float64)]
    m = [np.zeros_like(r) for r in ref]
    v = [np.zeros_like(r) for r in ref]
    for t in range(1, 7):
        grads = [rng.normal(size=r.shape) for r in ref]
        step(Tensor(grads[0].astype(np.float32)), Tensor(grads[1].astype(np.float32)))
        lr = float(schedule[t - 1])
        for i, decays in enumerate((True, False)):  # decay on the matrix only
            if decays:
                ref[i] = ref[i] * (1 - lr * 0.1)
            m[i] = 0.9 * m[i] + 0.1 * grads[i]
            v[i] = 0.95 * v[i] + 0.05 * grads[i] ** 2
            ref[i] = ref[i] - lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.95 ** t)) + 1e-8)
    np.testing.assert_allclose(w.asnumpy(), ref[0], atol=2e-6)
    np.testing.assert_allclose(b.asnumpy(), ref[1], atol=2e-6)
    assert int(opt.step.asnumpy()) == 6


def test_train_compiles_once_learns_and_checkpoints(tmp_path):
    trainer, lm = _trainer(tmp_path, steps=30)
    summary = trainer.train()
    assert trainer.train_compilations == 1  # fixed-length batches: one graph for the whole run
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5  # it learns the pattern
    evals = [r["val_loss"] for r in trainer.history if "val_loss" in r]
    assert len(evals) == 3 and evals[-1] < evals[0]
    assert summary["tokens_per_second"] > 0 and summary["compile_seconds"] > 0
    # last two step checkpoints kept (+ the best), no temp dirs left, metrics and curve written
    names = sorted(os.path.basename(p) for p in list_checkpoints(str(tmp_path)))
    assert names == ["checkpoint-20", "checkpoint-30"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 1
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_weights_loaded_after_compile_reach_the_compiled_steps(tmp_path):
    """The one way weights go into a model (`checkpoint.assign_weights`, behind Trainer.load_weights_from,
    load_state_dict and load_adapter): after the train and eval steps have compiled, the next compiled eval and
    train step compute with the loaded weights."""
    from ms_gpt.engine.trainer import SLOTS, TRAINING_STATE

    trainer, lm = _trainer(tmp_path, steps=20)
    trainer.train()  # compiles the train and eval steps; checkpoints and evaluations at steps 10 and 20
    at10 = [r["val_loss"] for r in trainer.history if r.get("step") == 10 and "val_loss" in r][0]
    assert abs(trainer.evaluate()["val_loss"] - at10) > 1e-3  # the weights moved on after step 10
    checkpoint = str(tmp_path / "checkpoint-10")
    trainer.load_weights_from(checkpoint)
    saved = ms.load_checkpoint(os.path.join(checkpoint, TRAINING_STATE))
    for p in lm.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), saved[p.name].asnumpy())
    assert trainer.evaluate()["val_loss"] == pytest.approx(at10, rel=1e-5)  # the compiled eval step sees them
    inputs, _ = trainer._next_stacked()  # the train step's inputs: [accumulation steps, batch, ...] per slot
    ids, targets = (inputs[SLOTS.index(k)][0] for k in ("input_ids", "targets"))
    eager = float(NextTokenLoss(lm)(ids, targets=targets).asnumpy())
    step = float(trainer._train_step(*inputs).asnumpy())
    assert step == pytest.approx(eager, rel=1e-5)  # the compiled train step starts from them too
    assert trainer.train_compilations == 1


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, capsys):
    full, _ = _trainer(tmp_path / "full", steps=30)
    full.train()
    reference = {r["step"]: r["loss"] for r in full.history if "loss" in r}

    killed, _ = _trainer(tmp_path / "resumed", steps=30, fail_after=23)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert killed.step == 23  # died after the checkpoint at step 20
    resumed, lm = _trainer(tmp_path / "resumed", steps=30, resume="auto")
    capsys.readouterr()
    resumed.train()
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resumed from")]
    assert said == [f"resumed from checkpoint {tmp_path / 'resumed' / 'checkpoint-20'} at step 20 "
                    "(training to step 30)"]  # disable_tqdm=True here: the line does not depend on the bar
    got = {r["step"]: r["loss"] for r in resumed.history if "loss" in r}
    for step in range(21, 31):
        assert got[step] == pytest.approx(reference[step], abs=1e-6), step
    final_ref = {p.name: p.asnumpy() for p in full.model.get_parameters()}
    for p in resumed.model.get_parameters():
        np.testing.assert_allclose(p.asnumpy(), final_ref[p.name], atol=1e-6)


def test_non_finite_loss_is_reported_with_its_step(tmp_path):
    trainer, lm = _trainer(tmp_path, steps=6)
    table = lm.transformer.wte.weight
    table.set_data(Tensor(np.full(table.shape, np.nan, np.float32)))
    with pytest.raises(FloatingPointError, match="at step 1"):
        trainer.train()


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    big, _ = _trainer(tmp_path / "a", steps=3, batch=8)
    big.train()
    # the same 8 windows per step, seen as 2 micro-batches of 4
    small, _ = _trainer(tmp_path / "b", steps=3, batch=4, accum=2)
    src = small.train_source

    def pairs():
        while True:
            w = src.windows(8)
            for half in (w[:4], w[4:]):
                yield {"input_ids": half[:, :-1], "targets": half[:, 1:]}
    gen = pairs()
    src.next_batch = lambda: next(gen)
    small.train()
    a = [r["loss"] for r in big.history if "loss" in r]
    b = [r["loss"] for r in small.history if "loss" in r]
    np.testing.assert_allclose(a, b, atol=1e-5)
    ref = {p.name: p.asnumpy() for p in big.model.get_parameters()}
    for p in small.model.get_parameters():
        np.testing.assert_allclose(p.asnumpy(), ref[p.name], atol=1e-5)


def test_fp16_loss_scaling_trains_and_skips_overflow(tmp_path):
    trainer, lm = _trainer(tmp_path, steps=12, fp16=True)
    trainer.train()
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    # a step whose float16 logits overflow is skipped (weights untouched) and halves the scale
    table = lm.transformer.wte.weight
    table.set_data(Tensor(np.full(table.shape, 1e4, np.float32)))
    lm.transformer.ln_f.bias.set_data(Tensor(np.full((32,), 10.0, np.float32)))  # h @ wte^T = 3.2e6 > 65504
    scale = float(trainer.loss_scale.asnumpy())
    weights = {p.name: p.asnumpy().copy() for p in lm.trainable_params()}
    trainer._train_step(*trainer._next_stacked()[0])
    assert float(trainer.loss_scale.asnumpy()) == pytest.approx(scale / 2)
    for p in lm.trainable_params():
        np.testing.assert_array_equal(p.asnumpy(), weights[p.name])


def test_parse_config_errors_and_aliases(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("learning_rate: 0.01\nmax_steps: 5\n")
    args = parse_config(TrainingArguments, ["--config", str(cfg), "--max_steps=7", "--fp16", "--train_url", "/o"],
                        aliases={"train_url": "output_dir"})
    assert (args.learning_rate, args.max_steps, args.fp16, args.output_dir) == (0.01, 7, True, "/o")
    with pytest.raises(ValueError, match="unknown option 'lerning_rate'.*learning_rate"):
        parse_config(TrainingArguments, ["--lerning_rate=1"])
    with pytest.raises(ValueError, match="'max_steps' expects int, got 'ten'"):
        parse_config(TrainingArguments, ["--max_steps", "ten"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        parse_config(TrainingArguments, ["--config", str(bad)])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        parse_config(TrainingArguments, ["--config", str(tmp_path / "missing.yaml")])


def test_next_token_loss_is_mean_cross_entropy_with_its_gradient():
    # the fused kernel against the closed form: mean over positions of logsumexp(logits) - logit[target]
    ms.set_seed(3)
    lm = GPTLMHeadModel(GPTConfig(**TINY))
    loss_fn = NextTokenLoss(lm)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 20, (3, 9)).astype(np.int32)
    targets = rng.integers(0, 20, (3, 9)).astype(np.int32)
    logits = lm(Tensor(ids)).asnumpy().astype(np.float64).reshape(-1, 20)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -logp[np.arange(27), targets.reshape(-1)].mean()
    got = float(loss_fn(Tensor(ids), targets=Tensor(targets)).asnumpy())
    assert got == pytest.approx(expected, abs=1e-5)
    # gradient w.r.t. the LM head weight (tied to wte) equals the one through ops.cross_entropy
    params = [lm.transformer.wte.weight]
    fused = ms.grad(lambda x, y: loss_fn(x, targets=y), grad_position=None, weights=params)(Tensor(ids),
                                                                                           Tensor(targets))

    def reference(x, y):
        out = lm(x)
        return ms.ops.cross_entropy(out.reshape(-1, 20), y.reshape(-1))
    ref = ms.grad(reference, grad_position=None, weights=params)(Tensor(ids), Tensor(targets))
    np.testing.assert_allclose(fused[0].asnumpy(), ref[0].asnumpy(), atol=1e-6)


def test_setup_device_applies_each_runs_seed():
    from ms_gpt.device import setup_device

    setup_device("CPU", 11)
    first = GPTLMHeadModel(GPTConfig(**TINY)).transformer.wte.weight.asnumpy()
    setup_device("CPU", 12)
    assert ms.get_seed() == 12
    setup_device("CPU", 11)  # a second run in the same process starts from its own seed again
    np.testing.assert_array_equal(GPTLMHeadModel(GPTConfig(**TINY)).transformer.wte.weight.asnumpy(), first)
