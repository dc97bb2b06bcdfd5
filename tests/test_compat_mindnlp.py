"""mindnlp 0.4.1 through ms_gpt.compat.mindnlp: import, model building, Trainer train/evaluate, load_dataset."""
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from ms_gpt.compat.mindnlp import (
    as_mindnlp_model,
    check_mindnlp_version,
    get_trainer_classes,
    import_mindnlp,
    load_dataset,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_importing_ms_gpt_and_compat_does_not_import_mindnlp():
    code = "import sys, ms_gpt, ms_gpt.compat.mindnlp; print('mindnlp imported:', 'mindnlp' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "GLOG_v": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    # MindSpore 2.10 prints its allocator settings ("[MS_ALLOC_CONF] ...") on stdout too: look for our line only
    assert "mindnlp imported: False" in result.stdout.splitlines(), result.stdout


def test_import_mindnlp_applies_fixes_once():
    mindnlp = import_mindnlp()
    assert import_mindnlp() is mindnlp
    from mindnlp.core import ops as core_ops
    from mindnlp.core.nn import Parameter
    from mindnlp.core.ops import creation
    from mindnlp.engine.trainer.base import Trainer

    assert hasattr(ms.common, "_stub_tensor")
    assert core_ops.empty is creation.empty and core_ops.empty(2, 3).shape == (2, 3)
    assert Parameter.grad is None
    assert getattr(Trainer.prediction_step, "_ms_gpt_compat", False)
    assert get_trainer_classes()[0] is Trainer


@pytest.mark.parametrize("version", ["0.5.0", "0.5.1", "0.3.1"])
def test_unsupported_mindnlp_versions_are_refused(version):
    with pytest.raises(ImportError, match=f"mindnlp {version} is installed"):
        check_mindnlp_version(version)


def test_supported_mindnlp_version_passes():
    check_mindnlp_version("0.4.1")


def test_tiny_mindnlp_gpt2_forward():
    import_mindnlp()
    from mindnlp.transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32)
    model = GPT2LMHeadModel(config)
    model.set_train(False)
    # Built through the patched `empty`: the initialiser must have overwritten the zeros.
    assert float(model.transformer.wte.weight.asnumpy().std()) > 0.01
    input_ids = ms.Tensor(np.random.randint(0, 64, (2, 8)), ms.int64)
    out = model(input_ids=input_ids, labels=input_ids)
    assert out.logits.shape == (2, 8, 64)
    assert np.isfinite(out.logits.asnumpy()).all()
    assert 0.0 < float(out.loss) < 10.0


class TinyClassifier(nn.Cell):
    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(4, 2)

    def construct(self, features, labels=None):
        logits = self.dense(features)
        if labels is None:
            return logits
        return ops.cross_entropy(logits, labels), logits


def _classification_data(n=64):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, 4)).astype(np.float32)
    labels = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(np.int32)
    # "notes" is not a construct parameter: the Trainer must drop it rather than pass it to the Cell.
    return ms.dataset.NumpySlicesDataset({"features": features, "labels": labels, "notes": labels}, shuffle=False)


def _accuracy(eval_prediction):
    predictions = np.asarray(eval_prediction.predictions)
    return {"accuracy": float((predictions.argmax(-1) == eval_prediction.label_ids).mean())}


def test_trainer_trains_a_cell_and_evaluates_accuracy(tmp_path):
    Trainer, TrainingArguments = get_trainer_classes()
    cell = TinyClassifier()
    model = as_mindnlp_model(cell)
    assert model.cell is cell
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16,
                             num_train_epochs=2, learning_rate=0.1, logging_steps=4, save_strategy="no",
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=_classification_data(),
                      eval_dataset=_classification_data(), compute_metrics=_accuracy)
    assert trainer.label_names == ["labels"]
    weights_before = cell.dense.weight.asnumpy().copy()

    before = trainer.evaluate()
    result = trainer.train()
    after = trainer.evaluate()

    assert result.global_step == 16
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert not np.allclose(cell.dense.weight.asnumpy(), weights_before)  # the Cell itself was trained
    assert after["eval_loss"] < before["eval_loss"]
    assert after["eval_accuracy"] >= 0.85
    assert 0.0 <= before["eval_accuracy"] <= 1.0


def test_adapter_rejects_non_cells():
    with pytest.raises(TypeError, match="mindspore.nn.Cell"):
        as_mindnlp_model(object())


def test_adapter_passes_mindnlp_modules_through():
    import_mindnlp()
    from mindnlp.core import nn as mindnlp_nn

    module = mindnlp_nn.Linear(2, 2)
    assert as_mindnlp_model(module) is module


def test_load_dataset_reads_local_csv(tmp_path):
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("text,label\ngreat film,1\nboring plot,0\nfine acting,1\n", encoding="utf-8")
    dataset = load_dataset("csv", data_files=str(csv_path), split="train", cache_dir=str(tmp_path / "cache"))
    assert dataset.get_col_names() == ["text", "label"]
    rows = list(dataset.create_dict_iterator(output_numpy=True))
    assert [str(r["text"]) for r in rows] == ["great film", "boring plot", "fine acting"]
    assert [int(r["label"]) for r in rows] == [1, 0, 1]


def test_load_dataset_names_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_dataset("csv", data_files=str(missing), split="train", cache_dir=str(tmp_path / "cache"))


def test_load_dataset_refuses_options_mindnlp_would_drop(tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("a;b\n1;2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="delimiter"):
        load_dataset("csv", data_files=str(csv_path), split="train", delimiter=";")


def test_ms_gpt_models_still_run_after_importing_mindnlp():
    # mindnlp renames MindSpore's dtype strings, which ops.arange parses; the compat import restores them
    import mindspore as ms
    import numpy as np

    from ms_gpt import GPTLMHeadModel, preset
    from ms_gpt.compat.mindnlp import import_mindnlp

    import_mindnlp()
    assert str(ms.int32) == "Int32"
    model = GPTLMHeadModel(preset("tiny"))
    assert model(np.ones((1, 5), np.int32)).shape == (1, 5, 1000)


def test_load_dataset_reads_empty_text_cells_as_empty_strings(tmp_path):
    # datasets reads an empty cell as None, which mindspore's GeneratorDataset cannot convert: without the fix the
    # iteration fails on the row (a pipeline filter would come too late)
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("category,text\nfresh,great film\nplot,\nrotten,dull\n", encoding="utf-8")
    dataset = load_dataset("csv", data_files=str(csv_path), split="train", cache_dir=str(tmp_path / "cache"))
    rows = list(dataset.create_dict_iterator(output_numpy=True))
    assert [str(r["text"]) for r in rows] == ["great film", "", "dull"]
    kept = dataset.filter(lambda category: str(category) != "plot", input_columns=["category"])
    assert [str(r["category"]) for r in kept.create_dict_iterator(output_numpy=True)] == ["fresh", "rotten"]
