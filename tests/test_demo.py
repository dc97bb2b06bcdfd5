"""`make demo` (python -m ms_gpt.demo) end to end at smoke size: corpus, pretraining, both fine-tunes, the summary."""
import json
import os

import numpy as np
import pytest

from ms_gpt.config import parse_config
from ms_gpt.demo import main
from ms_gpt.paths import resolve_path
from ms_gpt.recipes.finetune import FinetuneArguments
from ms_gpt.recipes.paradigm import CONFIGS, held_out_texts


def test_demo_runs_the_paradigm_at_smoke_size(tmp_path, capsys):
    summary = main([f"--output_dir={tmp_path}", "--smoke"])
    out = capsys.readouterr().out
    assert "pretrained + fine-tuned" in out and "fine-tuned from scratch" in out
    for key in ("pretrained_test_accuracy", "scratch_test_accuracy"):
        assert 0.0 <= summary[key] <= 1.0
    # the pretraining corpus leaves out every fine-tuning validation/test review (not only the smoke-size subset)
    corpus = set((tmp_path / "corpus.txt").read_text(encoding="utf-8").splitlines())
    args = parse_config(FinetuneArguments, ["--config", resolve_path(CONFIGS["finetune"]), "--max_eval_samples=64"])
    held_out = {" ".join(t.split()) for t in held_out_texts(args)}
    assert len(corpus) > 1000 and len(held_out) > 1000
    assert not corpus & held_out
    # both fine-tunes use the pretrained vocabulary and shape; only the pretrained one starts from its weights
    with open(os.path.join(tmp_path, "finetune", "config.json"), encoding="utf-8") as f:
        tuned = json.load(f)
    with open(os.path.join(tmp_path, "scratch", "config.json"), encoding="utf-8") as f:
        scratch = json.load(f)
    assert tuned["vocab_size"] == scratch["vocab_size"] and tuned["n_layer"] == scratch["n_layer"]
    with pytest.raises(ValueError, match="unknown option 'max_steps'"):
        main(["--max_steps=3"])


def test_feature_probe_separates_what_is_separable_and_not_noise():
    """benchmarks/probe_features.py's logistic probe: near 1.0 on a linearly separable label, ~chance on noise."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "probe_features.py")
    spec = importlib.util.spec_from_file_location("probe_features", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    x = {k: rng.normal(size=(n, 8)) for k, n in (("train", 400), ("validation", 200), ("test", 400))}
    separable = {k: (v[:, 0] + 0.5 * v[:, 3] > 0).astype(int) for k, v in x.items()}
    noise = {k: rng.integers(0, 2, len(v)) for k, v in x.items()}
    assert module.probe(x, separable) > 0.95
    assert abs(module.probe(x, noise) - 0.5) < 0.1
