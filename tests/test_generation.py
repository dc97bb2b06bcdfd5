"""generate(): static-KV-cache decoding against the no-cache path and Hugging Face's greedy outputs, sampling,
stopping, compile counts and bad input.

The models are the tiny HF reference checkpoints (tests/fixtures/hf, n_positions 64, vocab 1000), whose weights are
noisy enough that greedy decoding does not collapse onto one token. Each new batch size costs a pair of graph
compilations (prefill chunk, decode step) of a couple of seconds; prompt lengths and max_new_tokens cost none.
"""
import os
import warnings

import numpy as np
import pytest

from ms_gpt.generation import TokenChooser, compile_counts, generate, generate_text
from ms_gpt.model import GPTLMHeadModel
from ms_gpt.tokenizers import CharTokenizer

HF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf")


def load(name):
    return GPTLMHeadModel.from_pretrained(os.path.join(HF, name)), dict(np.load(os.path.join(HF, name, "expected.npz")))


@pytest.fixture(scope="module")
def gpt2():
    return load("gpt2")


@pytest.fixture(scope="module")
def openai_gpt():
    return load("openai-gpt")


# ---- greedy: cache == no cache == transformers ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "openai-gpt"])
def test_greedy_with_and_without_cache_match_hf(name, gpt2, openai_gpt):
    model, ref = gpt2 if name == "gpt2" else openai_gpt
    prompt, expected = ref["prompt_ids"], ref["greedy_ids"]
    new = expected.shape[1] - prompt.shape[1]
    cached = generate(model, prompt, max_new_tokens=new)
    recomputed = generate(model, prompt, max_new_tokens=new, use_cache=False)
    assert cached.dtype == np.int64 and cached.shape == expected.shape
    np.testing.assert_array_equal(recomputed, expected)
    np.testing.assert_array_equal(cached, expected)
    assert len(set(expected[0, prompt.shape[1]:].tolist())) > 5  # a varied continuation, not one repeated token


def test_left_padded_batch_matches_hf_and_rows_alone(gpt2):
    model, ref = gpt2
    prompts, mask, expected = ref["prompt_ids_batch_left"], ref["prompt_mask_batch_left"], ref["greedy_ids_batch_left"]
    new = expected.shape[1] - prompts.shape[1]
    cached = generate(model, prompts, attention_mask=mask, max_new_tokens=new, pad_token_id=0)
    recomputed = generate(model, prompts, attention_mask=mask, max_new_tokens=new, pad_token_id=0, use_cache=False)
    np.testing.assert_array_equal(cached, expected)
    np.testing.assert_array_equal(recomputed, expected)
    odd_padding = np.where(mask == 1, prompts, -1)  # what sits under mask 0 does not matter
    np.testing.assert_array_equal(generate(model, odd_padding, attention_mask=mask, max_new_tokens=new)[:, 8:],
                                  expected[:, 8:])
    for row in range(2):
        real = prompts[row][mask[row] == 1]
        alone = generate(model, real, max_new_tokens=new)  # a 1-D prompt is one row
        np.testing.assert_array_equal(alone[0, len(real):], expected[row, prompts.shape[1]:])


# ---- sampling -------------------------------------------------------------------------------------------------
def test_seeded_sampling_repeats_and_differs_by_seed(gpt2):
    model, ref = gpt2
    prompt = ref["prompt_ids"]
    kwargs = dict(max_new_tokens=20, do_sample=True, temperature=1.5, top_k=50, top_p=0.95)
    first = generate(model, prompt, seed=7, **kwargs)
    again = generate(model, prompt, seed=7, **kwargs)
    other = generate(model, prompt, seed=8, **kwargs)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert ((first >= 0) & (first < model.config.vocab_size)).all()
    two = generate(model, prompt, seed=7, num_return_sequences=2, **kwargs)
    assert two.shape == (2, first.shape[1]) and not np.array_equal(two[0], two[1])


def test_top_k_1_and_tiny_top_p_sampling_equal_greedy(gpt2):
    model, ref = gpt2
    for options in (dict(top_k=1), dict(top_p=1e-6)):
        sampled = generate(model, ref["prompt_ids"], max_new_tokens=20, do_sample=True, seed=3, temperature=2.0,
                           **options)
        np.testing.assert_array_equal(sampled, ref["greedy_ids"])


def test_token_chooser_filters_closed_form():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    draws = lambda chooser: np.array([chooser(logits)[0] for _ in range(4000)])  # noqa: E731
    top2 = draws(TokenChooser(4, do_sample=True, top_k=2, seed=0))
    assert set(top2.tolist()) == {2, 3}
    assert abs((top2 == 3).mean() - 0.4 / 0.7) < 0.03
    # top_p=0.6: 0.4 alone is short of 0.6, so 0.3 joins; 0.2 and 0.1 are cut
    nucleus = draws(TokenChooser(4, do_sample=True, top_p=0.6, seed=0))
    assert set(nucleus.tolist()) == {2, 3}
    plain = draws(TokenChooser(4, do_sample=True, temperature=0.5, seed=0))
    expected = np.array([0.1, 0.2, 0.3, 0.4]) ** 2 / (np.array([0.1, 0.2, 0.3, 0.4]) ** 2).sum()
    np.testing.assert_allclose(np.bincount(plain, minlength=4) / plain.size, expected, atol=0.03)
    # repetition penalty 2: a seen positive logit is halved, a seen negative one doubled
    greedy = TokenChooser(3, repetition_penalty=2.0)
    greedy.observe(np.array([[0, 1]]))
    assert greedy(np.array([[2.0, -1.0, 1.5]]))[0] == 2  # 2.0 -> 1.0 loses to the unseen 1.5
    assert greedy(np.array([[4.0, -1.0, 1.5]]))[0] == 0  # 4.0 -> 2.0 still wins
    assert TokenChooser(3, repetition_penalty=2.0)(np.array([[-0.5, -1.0, -0.6]]))[0] == 0
    greedy.observe(np.array([[2]]))
    assert greedy(np.array([[-0.5, -1.0, -0.3]]))[0] == 2  # all seen: -1.0, -2.0, -0.6


def test_repetition_penalty_same_with_and_without_cache(openai_gpt):
    model, ref = openai_gpt
    kwargs = dict(max_new_tokens=20, repetition_penalty=1.8)
    cached = generate(model, ref["prompt_ids"], **kwargs)
    np.testing.assert_array_equal(cached, generate(model, ref["prompt_ids"], use_cache=False, **kwargs))
    new = cached[0, ref["prompt_ids"].shape[1]:]
    assert len(set(new.tolist())) > len(set(ref["greedy_ids"][0, 8:].tolist()))  # fewer repeats than plain greedy


# ---- stopping -------------------------------------------------------------------------------------------------
def test_eos_stops_a_row_and_pads_it(gpt2):
    model, ref = gpt2
    greedy = ref["greedy_ids"][0]
    eos = int(greedy[8 + 3])  # the 4th generated token
    out = generate(model, ref["prompt_ids"], max_new_tokens=20, eos_token_id=eos)
    np.testing.assert_array_equal(out[0], greedy[:8 + 4])  # stops right after eos when every row is done

    prompts, mask, batch = ref["prompt_ids_batch_left"], ref["prompt_mask_batch_left"], ref["greedy_ids_batch_left"]
    row0, row1 = batch[0, 8:].tolist(), batch[1, 8:].tolist()
    stop = next(t for t in row0[1:] if t not in row1 and t != row0[0])
    at = row0.index(stop)
    assert at < 8  # row 0 stops with steps to spare
    out = generate(model, prompts, attention_mask=mask, max_new_tokens=10, eos_token_id=[stop], pad_token_id=-1)
    assert out.shape == batch.shape  # row 1 never stops, so all 10 steps run
    np.testing.assert_array_equal(out[1], batch[1])
    np.testing.assert_array_equal(out[0, :8 + at + 1], batch[0, :8 + at + 1])
    assert (out[0, 8 + at + 1:] == -1).all()  # a pad id outside the vocabulary is only written, never fed


def test_min_new_tokens_bans_eos(gpt2):
    model, ref = gpt2
    first = int(ref["greedy_ids"][0, 8])
    assert generate(model, ref["prompt_ids"], max_new_tokens=20, eos_token_id=first).shape[1] == 9
    out = generate(model, ref["prompt_ids"], max_new_tokens=20, eos_token_id=first, min_new_tokens=1)
    assert out[0, 8] != first and out.shape[1] >= 10


# ---- compilation ----------------------------------------------------------------------------------------------
def test_decode_compiles_once_per_shape_and_sees_new_weights():
    model, ref = load("gpt2")
    prompt = ref["prompt_ids"]
    first = generate(model, prompt, max_new_tokens=30)
    assert compile_counts(model) == {"prefill": 1, "decode": 1, "forward": 0}
    np.testing.assert_array_equal(generate(model, prompt, max_new_tokens=30), first)
    generate(model, prompt[:, 2:], max_new_tokens=30)  # shorter prompt, same bucket and cache length
    assert compile_counts(model) == {"prefill": 1, "decode": 1, "forward": 0}

    # weights updated in place (copy_/ops.assign, like an optimizer step) are read by the compiled graphs with no
    # recompilation. (Parameter.set_data after compilation is NOT safe on MindSpore 2.7: the graph keeps reading
    # the old, freed buffer.)
    table = model.transformer.wte.weight
    table.copy_(table * 0.5)
    changed = generate(model, prompt, max_new_tokens=30)
    assert not np.array_equal(changed, first)
    assert compile_counts(model) == {"prefill": 1, "decode": 1, "forward": 0}

    # a replaced Parameter (new vocabulary size) is traced again instead of reusing the old graph
    model.resize_token_embeddings(1010)
    out = generate(model, prompt, max_new_tokens=5, do_sample=True, seed=0)
    assert out.shape == (1, 13) and compile_counts(model) == {"prefill": 1, "decode": 1, "forward": 0}


def test_any_prompt_length_reuses_the_first_generations_graphs():
    """After the first call, new prompt lengths (one chunk, several chunks) and max_new_tokens, chat-like turns that
    grow the prompt, compile nothing: the cache always has n_positions + PREFILL_CHUNK slots and the prompt goes in
    PREFILL_CHUNK-token chunks. A multi-chunk prompt decodes as the no-cache path does."""
    model, _ = load("gpt2")
    rng = np.random.default_rng(1)
    generate(model, rng.integers(1, 1000, (1, 5)), max_new_tokens=4)
    assert compile_counts(model) == {"prefill": 1, "decode": 1, "forward": 0}
    turn = rng.integers(1, 1000, (1, 3))
    for prompt_len, new in ((3, 40), (33, 6), (50, 13), (63, 1)):
        prompt = rng.integers(1, 1000, (1, prompt_len))
        generate(model, prompt, max_new_tokens=new)
        turn = generate(model, np.concatenate([turn, prompt[:, :4]], axis=1), max_new_tokens=3)
    assert compile_counts(model) == {"prefill": 1, "decode": 1, "forward": 0}
    long_prompt = rng.integers(1, 1000, (1, 45))  # two chunks
    cached = generate(model, long_prompt, max_new_tokens=12, eos_token_id=[])
    assert compile_counts(model) == {"prefill": 1, "decode": 1, "forward": 0}
    np.testing.assert_array_equal(cached, generate(model, long_prompt, max_new_tokens=12, eos_token_id=[],
                                                   use_cache=False))
    # a new batch size (here num_return_sequences=2) compiles its pair once, then reuses it
    generate(model, long_prompt[:, :9], max_new_tokens=5, do_sample=True, seed=0, num_return_sequences=2)
    generate(model, long_prompt, max_new_tokens=2, do_sample=True, seed=0, num_return_sequences=2)
    assert compile_counts(model) == {"prefill": 2, "decode": 2, "forward": 1}


def test_every_window_runs_on_one_decode_graph_and_matches_the_no_cache_path():
    """On CPU / GPU the decode step's window axis is dynamic: calls attending to 32, 64, ... or all cache slots run
    on the one graph compiled on the first call, and each matches the no-cache path."""
    from ms_gpt.config import GPTConfig
    from ms_gpt.generation import WINDOW_STEP

    config = GPTConfig(vocab_size=97, n_positions=8 * WINDOW_STEP + 8, n_embd=32, n_layer=1, n_head=2,
                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPTLMHeadModel(config)
    rng = np.random.default_rng(2)
    short = generate(model, rng.integers(0, 97, (1, 20)), max_new_tokens=8, eos_token_id=[])
    assert compile_counts(model) == {"prefill": 1, "decode": 1, "forward": 0}
    for prompt_len, new in ((WINDOW_STEP + 3, 40), (5 * WINDOW_STEP, 20), (config.n_positions - 30, 30)):
        prompt = rng.integers(0, 97, (1, prompt_len))
        cached = generate(model, prompt, max_new_tokens=new, eos_token_id=[])
        np.testing.assert_array_equal(cached, generate(model, prompt, max_new_tokens=new, eos_token_id=[],
                                                       use_cache=False))
    counts = compile_counts(model)  # "forward" counts the no-cache references
    assert (counts["prefill"], counts["decode"]) == (1, 1)
    np.testing.assert_array_equal(short, generate(model, short[:, :20], max_new_tokens=8, eos_token_id=[],
                                                  use_cache=False))


def test_static_shape_devices_compile_one_decode_graph_per_window(monkeypatch):
    """Ascend runs static shapes: the first call compiles one decode graph per window in STATIC_WINDOWS plus one over
    all slots, and calls on either side of a window use them without compiling more."""
    from ms_gpt import generation
    from ms_gpt.config import GPTConfig

    monkeypatch.setattr(generation, "_static_shapes", lambda: True)
    window = generation.STATIC_WINDOWS[0]
    config = GPTConfig(vocab_size=97, n_positions=window + 40, n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.0,
                       embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPTLMHeadModel(config)
    rng = np.random.default_rng(3)
    short = generate(model, rng.integers(0, 97, (1, 20)), max_new_tokens=8, eos_token_id=[])
    assert compile_counts(model) == {"prefill": 1, "decode": 2, "forward": 0}
    long_prompt = rng.integers(0, 97, (1, window - 10))  # + 30 new tokens: past the window
    long = generate(model, long_prompt, max_new_tokens=30, eos_token_id=[])
    assert compile_counts(model) == {"prefill": 1, "decode": 2, "forward": 0}
    np.testing.assert_array_equal(long, generate(model, long_prompt, max_new_tokens=30, eos_token_id=[],
                                                 use_cache=False))
    np.testing.assert_array_equal(short, generate(model, short[:, :20], max_new_tokens=8, eos_token_id=[],
                                                  use_cache=False))


# ---- bad and edge input ---------------------------------------------------------------------------------------
def test_bad_input_gives_one_clear_error(gpt2):
    model, ref = gpt2
    prompt = ref["prompt_ids"]
    cases = [
        (dict(input_ids=np.zeros((1, 0), dtype=np.int64)), "empty"),
        (dict(input_ids=[]), "empty"),
        (dict(input_ids=prompt, attention_mask=np.array([[0] * 8])), "row 0 has no real token"),
        (dict(input_ids=prompt, attention_mask=np.array([[1] * 6 + [0] * 2])), "not left-padded"),
        (dict(input_ids=prompt, attention_mask=np.ones((1, 7))), "does not match"),
        (dict(input_ids=[[1, 2, 1000]]), "id 1000 outside the vocabulary"),
        (dict(input_ids=prompt, max_new_tokens=-1), "max_new_tokens"),
        (dict(input_ids=prompt, do_sample=True, temperature=0.0), "temperature"),
        (dict(input_ids=prompt, top_p=0.0), "top_p"),
        (dict(input_ids=prompt, top_k=-2), "top_k"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            generate(model, **kwargs)
    np.testing.assert_array_equal(generate(model, prompt, max_new_tokens=0), prompt)
    # as in HF, an eos id outside the vocabulary can never be produced: a one-line warning, and it is ignored
    with pytest.warns(UserWarning, match=r"eos_token_id=5000 is outside the vocabulary \[0, 1000\); ignored"):
        out = generate(model, prompt, max_new_tokens=20, eos_token_id=5000)
    np.testing.assert_array_equal(out, ref["greedy_ids"])


def test_over_long_prompt_is_trimmed_with_a_warning(gpt2):
    model, _ = gpt2
    long_prompt = np.random.default_rng(0).integers(1, 1000, (1, 70))
    with pytest.warns(UserWarning, match="keeping the last 48 prompt tokens"):
        out = generate(model, long_prompt, max_new_tokens=16)
    assert out.shape == (1, 86)
    np.testing.assert_array_equal(out[:, :70], long_prompt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trimmed = generate(model, long_prompt[:, -48:], max_new_tokens=16)
    np.testing.assert_array_equal(out[:, 70:], trimmed[:, 48:])
    with pytest.warns(UserWarning, match="generating 63 tokens"):
        capped = generate(model, long_prompt[:, :3], max_new_tokens=100, use_cache=False)
    assert capped.shape == (1, 3 + 63)


def test_generate_text_with_unknown_characters(gpt2):
    model, _ = gpt2
    tokenizer = CharTokenizer(chr(0x4E00 + i) for i in range(1000))  # one CJK character per model id
    with pytest.warns(UserWarning, match="dropped 1 character"):
        text, = generate_text(model, tokenizer, "一丁x七", max_new_tokens=5)
    assert text.startswith("一丁x七") and len(text) == 4 + 5
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no token"):
        generate_text(model, tokenizer, "xyz", max_new_tokens=5)
