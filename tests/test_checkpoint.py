"""ms_gpt.checkpoint: HF-layout loading/saving, the safetensors reader (bfloat16 included), the torch-free .bin
reader/writer, .ckpt, and clear errors."""
import io
import json
import os
import pickle
import shutil
import time
import warnings
import zipfile

import numpy as np
import pytest

from ms_gpt import GPTDoubleHeadsModel, GPTForSequenceClassification, GPTLMHeadModel, GPTModel
from ms_gpt.checkpoint import torch_bin
from ms_gpt.checkpoint import (load_state_dict, read_safetensors, read_torch_bin, read_weights, save_ckpt,
                               save_pretrained, state_dict, write_torch_bin)

HF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf")
GPT2, GPT1 = os.path.join(HF, "gpt2"), os.path.join(HF, "openai-gpt")


@pytest.fixture(scope="module")
def gpt2():
    return GPTLMHeadModel.from_pretrained(GPT2)


@pytest.fixture(scope="module")
def ids():
    return np.load(os.path.join(GPT2, "expected.npz"))["input_ids"].astype(np.int32)


def only(src_dir: str, weight_file: str, dst) -> str:
    """A copy of a fixture folder with config.json and one weight file."""
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src_dir, "config.json"), dst)
    shutil.copy(os.path.join(src_dir, weight_file), dst)
    return str(dst)


def assert_same_params(a, b):
    sa, sb = state_dict(a), state_dict(b)
    assert sorted(sa) == sorted(sb)
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


# ---- reading: .bin == .safetensors, legacy torch format, sharded index --------------------------------------------
@pytest.mark.parametrize("folder", [GPT2, GPT1])
def test_bin_and_safetensors_hold_identical_tensors(folder):
    safe = read_safetensors(os.path.join(folder, "model.safetensors"))
    binary = read_torch_bin(os.path.join(folder, "pytorch_model.bin"))
    # the .bin is torch's full state_dict: the tied lm_head.weight shares the token table's storage
    assert set(binary) == set(safe) | {"lm_head.weight"}
    for key, value in safe.items():
        assert binary[key].dtype == value.dtype == np.float32
        np.testing.assert_array_equal(binary[key], value, err_msg=key)
    table = "transformer.wte.weight" if folder == GPT2 else "transformer.tokens_embed.weight"
    np.testing.assert_array_equal(binary["lm_head.weight"], safe[table])


def test_model_from_bin_equals_model_from_safetensors(tmp_path, gpt2):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lm_head.weight is consumed as tied, not reported as unexpected
        from_bin = GPTLMHeadModel.from_pretrained(only(GPT2, "pytorch_model.bin", tmp_path))
    assert_same_params(from_bin, gpt2)


def test_legacy_torch_format_without_prefix_and_with_mask_buffers(gpt2):
    raw = read_torch_bin(os.path.join(HF, "gpt2-legacy", "pytorch_model.bin"))
    assert "wte.weight" in raw and "h.0.attn.bias" in raw and "h.0.attn.masked_bias" in raw
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old mask buffers are ignored silently
        legacy = GPTLMHeadModel.from_pretrained(os.path.join(HF, "gpt2-legacy"))
    assert_same_params(legacy, gpt2)


def test_sharded_safetensors_index(tmp_path, gpt2, ids):
    weights = read_safetensors(os.path.join(GPT2, "model.safetensors"))
    from safetensors.numpy import save_file

    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, shard_keys in shards.items():
        save_file({k: weights[k] for k in shard_keys}, str(tmp_path / name))
    index = {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(os.path.join(GPT2, "config.json"), tmp_path)
    sharded = GPTLMHeadModel.from_pretrained(str(tmp_path))
    assert_same_params(sharded, gpt2)


def test_bin_reader_honours_offset_stride_and_dtypes(tmp_path):
    """Hand-built torch zip: a transposed view with a storage offset, float16, bfloat16 and int64 storages."""

    class Tensor:
        def __init__(self, key, type_name, numel, offset, shape, stride):
            self.args = (torch_bin._StorageOut(key, type_name, numel), offset, shape, stride, False)

        def __reduce__(self):
            return torch_bin._REBUILD_V2, self.args

    base = np.arange(24, dtype=np.float32)
    bf16 = np.array([1.0, -2.5, 3.0e10], dtype=np.float32)
    state = {
        # base[2:].reshape(2, 11)[:, :3] transposed: offset 2, shape (3, 2), strides (1, 11)
        "view_t": Tensor("0", "FloatStorage", 24, 2, (3, 2), (1, 11)),
        "half": Tensor("1", "HalfStorage", 4, 0, (2, 2), (2, 1)),
        "bf16": Tensor("2", "BFloat16Storage", 3, 0, (3,), (1,)),
        "long": Tensor("3", "LongStorage", 3, 1, (2,), (1,)),
    }
    payloads = {"0": base.tobytes(), "1": np.arange(4, dtype=np.float16).tobytes(),
                "2": (bf16.view(np.uint32) >> 16).astype(np.uint16).tobytes(),
                "3": np.array([7, 8, 9], dtype=np.int64).tobytes()}
    buffer = io.BytesIO()
    torch_bin._TorchPickler(buffer, protocol=2).dump(state)
    path = tmp_path / "hand.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hand/data.pkl", buffer.getvalue())
        for key, raw in payloads.items():
            archive.writestr(f"hand/data/{key}", raw)
    got = read_torch_bin(str(path))
    np.testing.assert_array_equal(got["view_t"], base[2:].reshape(2, 11)[:, :3].T)
    assert got["half"].dtype == np.float16 and got["half"].tolist() == [[0, 1], [2, 3]]
    truncated = ((bf16.view(np.uint32) >> 16) << 16).view(np.float32)  # what bf16 keeps of each value
    assert got["bf16"].dtype == np.float32 and got["bf16"].tolist() == truncated.tolist()
    assert got["bf16"][:2].tolist() == [1.0, -2.5] and got["bf16"][2] != bf16[2]
    assert got["long"].dtype == np.int64 and got["long"].tolist() == [8, 9]


# ---- saving ---------------------------------------------------------------------------------------------------------
def test_save_pretrained_round_trip_in_hf_layout(tmp_path, gpt2, ids):
    out = tmp_path / "saved"
    gpt2.save_pretrained(str(out))
    # the checkpoint's generation_config.json travels with it, as transformers saves it
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors"]
    assert json.loads((out / "generation_config.json").read_text()) == \
        json.loads(open(os.path.join(GPT2, "generation_config.json")).read())
    assert not [n for n in os.listdir(tmp_path) if n != "saved"]  # no temp dir left behind
    # the keys transformers saves for GPT2LMHeadModel: `transformer.` prefixed, tied lm_head left out
    assert sorted(read_safetensors(str(out / "model.safetensors"))) == \
        sorted(read_safetensors(os.path.join(GPT2, "model.safetensors")))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    again = GPTLMHeadModel.from_pretrained(str(out))
    assert_same_params(again, gpt2)
    np.testing.assert_array_equal(again(ids).asnumpy(), gpt2(ids).asnumpy())


def test_save_pretrained_as_torch_bin(tmp_path, gpt2):
    out = tmp_path / "bin"
    save_pretrained(gpt2, str(out), safe_serialization=False)
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "pytorch_model.bin"]
    with zipfile.ZipFile(out / "pytorch_model.bin") as archive:
        data_infos = [i for i in archive.infolist() if "/data/" in i.filename]
        # torch memory-maps records: the data must start on 64-byte boundaries
        assert all((i.header_offset + 30 + len(i.filename) + len(i.extra)) % 64 == 0 for i in data_infos)
    assert_same_params(GPTLMHeadModel.from_pretrained(str(out)), gpt2)


def test_body_and_head_classes_save_hf_keys(tmp_path):
    body = GPTModel.from_pretrained(GPT1)
    save_pretrained(body, str(tmp_path / "body"))
    keys = set(read_safetensors(str(tmp_path / "body" / "model.safetensors")))
    assert "tokens_embed.weight" in keys and not any(k.startswith("transformer.") for k in keys)
    assert json.loads((tmp_path / "body" / "config.json").read_text())["architectures"] == ["OpenAIGPTModel"]
    cls = GPTForSequenceClassification.from_pretrained(os.path.join(HF, "openai-gpt-cls"))
    cls.__dict__["generation_config"] = {"eos_token_id": 1}  # as if loaded from an LM checkpoint's folder
    save_pretrained(cls, str(tmp_path / "cls"))
    assert not (tmp_path / "cls" / "generation_config.json").exists()  # HF writes it only for generative models
    assert set(read_safetensors(str(tmp_path / "cls" / "model.safetensors"))) == \
        set(read_safetensors(os.path.join(HF, "openai-gpt-cls", "model.safetensors")))


def test_save_into_existing_directory_keeps_other_files(tmp_path, gpt2):
    out = tmp_path / "run"
    out.mkdir()
    (out / "tokenizer.json").write_text("{}")
    (out / "pytorch_model.bin").write_bytes(b"stale")
    (out / "checkpoint-10").mkdir()
    save_pretrained(gpt2, str(out))
    assert sorted(os.listdir(out)) == ["checkpoint-10", "config.json", "generation_config.json", "model.safetensors",
                                       "tokenizer.json"]
    assert_same_params(GPTLMHeadModel.from_pretrained(str(out)), gpt2)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, gpt2, monkeypatch):
    out = tmp_path / "ckpt"
    save_pretrained(gpt2, str(out))
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.numpy.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(gpt2, str(out))
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # the temp dir was cleaned up


def test_mindspore_ckpt_round_trip(tmp_path, gpt2, ids):
    path = tmp_path / "model.ckpt"
    save_ckpt(gpt2, str(path))
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.ckpt"]
    from_file = GPTLMHeadModel.from_pretrained(str(path))
    from_dir = GPTLMHeadModel.from_pretrained(str(tmp_path))  # a directory with one .ckpt
    assert_same_params(from_file, gpt2)
    assert_same_params(from_dir, gpt2)
    np.testing.assert_array_equal(from_file(ids).asnumpy(), gpt2(ids).asnumpy())


def test_state_dict_round_trip(gpt2):
    other = GPTLMHeadModel(gpt2.config)
    report = load_state_dict(other, state_dict(gpt2))
    assert report.newly_initialized == [] and report.unexpected == []
    assert_same_params(other, gpt2)


# ---- heads, missing and unexpected weights ------------------------------------------------------------------------
def test_head_from_lm_checkpoint_initializes_head_with_one_warning(gpt2):
    with pytest.warns(UserWarning) as record:
        cls = GPTForSequenceClassification.from_pretrained(GPT2, num_labels=4)
    messages = [str(w.message) for w in record if "newly initialized" in str(w.message)]
    assert len(messages) == 1 and "score.weight" in messages[0]
    assert cls.score.weight.shape == (4, 64)
    body, lm_body = state_dict(cls.transformer), state_dict(gpt2.transformer)
    assert all(np.array_equal(body[k], lm_body[k]) for k in lm_body)

    with pytest.warns(UserWarning, match=r"newly initialized: multiple_choice_head\.summary\.weight, "
                                         r"multiple_choice_head\.summary\.bias"):
        GPTDoubleHeadsModel.from_pretrained(GPT2)


def test_unexpected_keys_warn(ids):
    with pytest.warns(UserWarning, match=r"ignored 1 key\(s\) that GPTLMHeadModel does not use: score\.weight"):
        lm = GPTLMHeadModel.from_pretrained(os.path.join(HF, "gpt2-cls"))
    assert lm(ids[:1]).shape == (1, 16, 1000)


def test_missing_body_weights_are_an_error(tmp_path):
    weights = read_safetensors(os.path.join(GPT2, "model.safetensors"))
    del weights["transformer.h.1.mlp.c_fc.weight"], weights["transformer.ln_f.bias"]
    from safetensors.numpy import save_file

    save_file(weights, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(GPT2, "config.json"), tmp_path)
    with pytest.raises(ValueError, match=r"missing body weights for GPTLMHeadModel: .*transformer\.ln_f\.bias.*"
                                         r"transformer\.h\.1\.mlp\.c_fc\.weight|c_fc\.weight.*ln_f\.bias"):
        GPTLMHeadModel.from_pretrained(str(tmp_path))


def test_untied_lm_head_is_an_error(tmp_path):
    weights = read_safetensors(os.path.join(GPT2, "model.safetensors"))
    weights["lm_head.weight"] = weights["transformer.wte.weight"] + 1.0
    from safetensors.numpy import save_file

    save_file(weights, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(GPT2, "config.json"), tmp_path)
    with pytest.raises(ValueError, match=r"lm_head\.weight differs from the token table transformer\.wte\.weight"):
        GPTLMHeadModel.from_pretrained(str(tmp_path))


def test_config_and_weights_shape_mismatch_names_key_and_shapes():
    with pytest.raises(ValueError, match=r"transformer\.wte\.weight: checkpoint \(1000, 64\) vs model \(1200, 64\)"):
        GPTLMHeadModel.from_pretrained(GPT2, vocab_size=1200)


def test_unknown_config_override_is_an_error():
    with pytest.raises(ValueError, match=r"unknown config override 'num_lables'"):
        GPTForSequenceClassification.from_pretrained(GPT2, num_lables=3)


# ---- broken files -------------------------------------------------------------------------------------------------
def test_missing_weight_file(tmp_path):
    shutil.copy(os.path.join(GPT2, "config.json"), tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"no weight file in {tmp_path}: expected one of model\.safetensors"):
        GPTLMHeadModel.from_pretrained(str(tmp_path))


def test_ckpt_without_config_beside_it(tmp_path, gpt2):
    save_ckpt(gpt2, str(tmp_path / "model.ckpt"))
    os.remove(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match=r"config\.json not found: a checkpoint needs config\.json beside"):
        GPTLMHeadModel.from_pretrained(str(tmp_path / "model.ckpt"))


@pytest.mark.parametrize("cut", [5, 100, 20_000])
def test_truncated_safetensors(tmp_path, cut):
    path = only(GPT2, "model.safetensors", tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) - cut] if cut > 100 else data[:cut])
    with pytest.raises(ValueError, match=rf"{tmp_path}/model\.safetensors: truncated"):
        GPTLMHeadModel.from_pretrained(path)


def _rewrite_header(src: str, dst, edit) -> None:
    """Copy a .safetensors file with its JSON header changed by `edit(header) -> bytes` (data left as it is)."""
    data = open(src, "rb").read()
    size = int.from_bytes(data[:8], "little")
    header = edit(json.loads(data[8:8 + size]))
    dst.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + size:])


def _wrong_shape(header):
    header["transformer.wte.weight"]["shape"] = [999, 64]  # one row short of its bytes
    return json.dumps(header).encode()


@pytest.mark.parametrize("edit", [lambda h: b"{not json" + b" " * 100, lambda h: b"[1, 2]  ", _wrong_shape],
                         ids=["not-json", "not-an-object", "shape-vs-bytes"])
def test_corrupt_safetensors_header(tmp_path, edit):
    path = tmp_path / "model.safetensors"
    _rewrite_header(os.path.join(GPT2, "model.safetensors"), path, edit)
    with pytest.raises(ValueError, match=rf"{path}: truncated or corrupt safetensors file \(.*header"):
        read_safetensors(str(path))


def test_safetensors_dtype_ms_gpt_does_not_read(tmp_path):
    from safetensors.numpy import save_file

    save_file({"a": np.ones(2, np.float32), "b": np.ones(2, np.uint16)}, str(tmp_path / "u16.safetensors"))
    with pytest.raises(ValueError, match=r"u16\.safetensors: tensor 'b' has dtype U16, which ms_gpt does not read"):
        read_safetensors(str(tmp_path / "u16.safetensors"))


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bfloat16 (ties to even, what torch does), as float32: the closed-form reference."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


def test_bf16_checkpoint_saved_by_transformers(gpt2):
    """hf/gpt2-bf16 is hf/gpt2 cast to bfloat16 by torch and saved by transformers: it reads as float32 holding
    exactly the bf16 rounding of the float32 weights, and loads into a model."""
    bf16 = read_safetensors(os.path.join(HF, "gpt2-bf16", "model.safetensors"))
    f32 = read_safetensors(os.path.join(GPT2, "model.safetensors"))
    assert sorted(bf16) == sorted(f32)
    for key, value in f32.items():
        assert bf16[key].dtype == np.float32 and bf16[key].shape == value.shape
        np.testing.assert_array_equal(bf16[key], round_to_bf16(value), err_msg=key)
    assert not np.array_equal(bf16["transformer.wte.weight"], f32["transformer.wte.weight"])  # bf16 did round
    model = GPTLMHeadModel.from_pretrained(os.path.join(HF, "gpt2-bf16"))
    params = state_dict(model)
    for key, value in bf16.items():
        np.testing.assert_array_equal(params[key], value, err_msg=key)


def test_bf16_mixed_with_other_dtypes_written_by_safetensors():
    """A file safetensors.torch wrote with BF16 next to float16 and int64 tensors (tests/fixtures/make_bf16.py):
    each comes back with its values, keys in sorted order."""
    got = read_safetensors(os.path.join(os.path.dirname(HF), "safetensors", "mixed_bf16.safetensors"))
    assert list(got) == ["a.half", "b.bf16", "c.long"]
    assert got["a.half"].dtype == np.float16 and got["a.half"].tolist() == [1, 2, 3]
    assert got["c.long"].dtype == np.int64 and got["c.long"].tolist() == [7, -8]
    values = np.array([[1.0, -2.5, 3.0e10], [0.0, -0.0, 1.0e-3]], dtype=np.float32)
    assert got["b.bf16"].dtype == np.float32 and got["b.bf16"].tolist() == round_to_bf16(values).tolist()
    assert got["b.bf16"][0, :2].tolist() == [1.0, -2.5] and got["b.bf16"][0, 2] != values[0, 2]
    assert np.signbit(got["b.bf16"][1, 1])  # -0.0 kept


@pytest.mark.parametrize("cut", [100, 300_000])
def test_truncated_torch_bin(tmp_path, cut):
    path = only(GPT2, "pytorch_model.bin", tmp_path)
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) - cut])
    with pytest.raises(ValueError, match=rf"{tmp_path}/pytorch_model\.bin: (truncated or corrupt|not a PyTorch)"):
        GPTLMHeadModel.from_pretrained(path)


def test_corrupt_ckpt(tmp_path, gpt2):
    save_ckpt(gpt2, str(tmp_path / "model.ckpt"))
    data = (tmp_path / "model.ckpt").read_bytes()
    (tmp_path / "model.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{tmp_path}/model\.ckpt: truncated or corrupt MindSpore checkpoint"):
        GPTLMHeadModel.from_pretrained(str(tmp_path / "model.ckpt"))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_malicious_bin_is_refused_and_not_executed(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"transformer.wte.weight": _Exploit(marker)}, protocol=2)
    path = tmp_path / "pytorch_model.bin"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
    else:  # torch's legacy layout: magic number, protocol version, sys info, then the state dict
        header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
        path.write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in header) + payload)
    shutil.copy(os.path.join(GPT2, "config.json"), tmp_path)
    with pytest.raises(ValueError, match=rf"{path}: refusing to load: the pickle references posix\.system"):
        GPTLMHeadModel.from_pretrained(str(tmp_path))
    assert not marker.exists()


def test_writer_output_uses_only_allowed_globals(tmp_path):
    path = tmp_path / "w.bin"
    write_torch_bin({"a": np.ones((2, 3), np.float32), "b": np.arange(4, dtype=np.int64)}, str(path))
    with zipfile.ZipFile(path) as archive:
        text = archive.read("pytorch_model/data.pkl")
    assert b"torch._utils\n_rebuild_tensor_v2" in text and b"torch\nFloatStorage" in text
    got = read_weights(str(path))
    assert got["a"].tolist() == [[1] * 3] * 2 and got["b"].tolist() == [0, 1, 2, 3]


# ---- hub names ----------------------------------------------------------------------------------------------------
def test_hub_name_offline_fails_fast_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"'gpt2' is not a local file or directory.*HF_HUB_OFFLINE.*"
                                                r"pass its local directory"):
        GPTLMHeadModel.from_pretrained("gpt2")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a mirror that is down: refused at once
    with pytest.raises(FileNotFoundError, match=r"'uer/gpt2-chinese-cluecorpussmall' .*http://127\.0\.0\.1:9 is "
                                                r"unreachable.*pass its local directory"):
        GPTLMHeadModel.from_pretrained("uer/gpt2-chinese-cluecorpussmall")
    assert time.monotonic() - start < 10


def test_hub_name_resolves_from_the_local_cache(tmp_path, monkeypatch, gpt2):
    snapshot = tmp_path / "models--someone--tiny-gpt2" / "snapshots" / ("a" * 40)
    only(GPT2, "model.safetensors", snapshot)
    (tmp_path / "models--someone--tiny-gpt2" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-gpt2" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never contacted: the cache answers
    assert_same_params(GPTLMHeadModel.from_pretrained("someone/tiny-gpt2"), gpt2)
