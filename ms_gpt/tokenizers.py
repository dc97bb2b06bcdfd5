"""Tokenizers for ms_gpt: character level, GPT-2 byte-level BPE, GPT-1 BPE and BERT WordPiece.

The three sub-word tokenizers are thin wrappers over the Hugging Face ``tokenizers`` library (Rust BPE and
WordPiece); the character tokenizer is pure Python. They share one HF-like API (:class:`BaseTokenizer`):
``encode``/``decode``/``__call__``, special-token attributes (``pad_token``, ``pad_token_id``, ...),
``add_special_tokens``/``add_tokens`` (new ids are always appended after the existing ones) and
``save_pretrained``/``load_tokenizer``.

On disk a tokenizer is its vocabulary files in the usual layout (``vocab.json`` + ``merges.txt``,
``vocab.txt`` or ``char_vocab.json``), ``tokenizer.json`` (the sub-word tokenizers' whole pipeline, the file
transformers 5 saves alone) and ``tokenizer_config.json`` holding the class name, the special tokens and every
added token with its id (HF's ``added_tokens_decoder`` layout). :func:`load_tokenizer` reads every layout the
Hugging Face hub serves: ``tokenizer.json`` is preferred when present, and ``special_tokens_map.json`` /
``added_tokens.json`` of older saves are honoured.

Must not import: any ms_gpt module but ms_gpt.paths.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .paths import atomic_directory

__all__ = [
    "BaseTokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "OpenAIGPTTokenizer",
    "BertTokenizer",
    "load_tokenizer",
    "BUNDLED_TOKENIZERS",
    "SPECIAL_TOKEN_ATTRS",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_FILE = "tokenizer.json"  # the `tokenizers` library's whole pipeline (what transformers 5 saves alone)
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
VERY_LARGE_INTEGER = int(1e30)  # HF's model_max_length when a tokenizer names no limit
SPECIAL_TOKEN_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# Names load_tokenizer() resolves to files shipped in ms_gpt/assets (all GPT-2 sizes share one tokenizer).
BUNDLED_TOKENIZERS = {
    "gpt2": ASSETS_DIR / "gpt2-bpe",
    "gpt2-medium": ASSETS_DIR / "gpt2-bpe",
    "gpt2-large": ASSETS_DIR / "gpt2-bpe",
    "gpt2-xl": ASSETS_DIR / "gpt2-bpe",
    "bert-base-chinese": ASSETS_DIR / "bert-base-chinese",
}

PathLike = Union[str, "os.PathLike[str]"]
Ids = Any  # an int, a sequence of ints, or a numpy array / MindSpore tensor (anything with .tolist())
T = TypeVar("T", bound="BaseTokenizer")


class BaseTokenizer(ABC):
    """Shared tokenizer API; subclasses supply the vocabulary and the text <-> id mapping."""

    tokenizer_class: ClassVar[str]  # name written to / matched in tokenizer_config.json

    # Installed as read-only properties after the class body; change them through add_special_tokens().
    bos_token: Optional[str]
    eos_token: Optional[str]
    unk_token: Optional[str]
    sep_token: Optional[str]
    pad_token: Optional[str]
    cls_token: Optional[str]
    mask_token: Optional[str]
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    unk_token_id: Optional[int]
    sep_token_id: Optional[int]
    pad_token_id: Optional[int]
    cls_token_id: Optional[int]
    mask_token_id: Optional[int]

    def __init__(self) -> None:
        self._special_tokens: Dict[str, Optional[str]] = dict.fromkeys(SPECIAL_TOKEN_ATTRS)
        self._additional_special_tokens: List[str] = []
        self.model_max_length: int = VERY_LARGE_INTEGER  # tokenizer_config.json's, as in HF (informative)
        # HF's clean_up_tokenization_spaces: join " ," " ." " 's" ... in decoded text (transformers 4 saves it True
        # for BERT vocabularies); read from tokenizer_config.json, off when absent
        self.clean_up_tokenization_spaces: bool = False
        # HF's chat_template: a Jinja template turning chat messages into the model's prompt text (saved in
        # tokenizer_config.json; a chat_template.jinja file beside it, as transformers 5 writes, is read too)
        self.chat_template: Optional[str] = None

    # ----------------------------------------------------------------- backend hooks
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""

    @abstractmethod
    def get_vocab(self) -> Dict[str, int]:
        """token -> id for every token, added tokens included."""

    @abstractmethod
    def _token_to_id(self, token: str) -> Optional[int]: ...

    @abstractmethod
    def _id_to_token(self, index: int) -> str: ...

    @abstractmethod
    def _encode(self, text: str) -> List[int]: ...

    @abstractmethod
    def _decode(self, ids: List[int]) -> str: ...

    @abstractmethod
    def _add(self, tokens: Sequence[str], special: bool) -> None:
        """Append tokens not yet known; mark them (and known ones) special when asked."""

    @abstractmethod
    def _added_tokens(self) -> Dict[int, Tuple[str, bool]]:
        """id -> (token, special) for added tokens and for base-vocabulary tokens registered as special."""

    @abstractmethod
    def _vocab_files(self) -> Dict[str, str]:
        """file name -> content of the base vocabulary files."""

    def _extra_config(self) -> Dict[str, Any]:
        return {}

    def _pipeline_files(self) -> Dict[str, str]:
        """file name -> content of files describing the whole pipeline (``tokenizer.json``), if the class has one."""
        return {}

    def _apply_config(self, config: Dict[str, Any], config_path: Path) -> None:
        """Options of ``tokenizer_config.json`` that change the pipeline (they win over ``tokenizer.json``, as in HF)."""

    @classmethod
    @abstractmethod
    def _from_files(cls: Type[T], directory: Path, config: Dict[str, Any]) -> T:
        """Build the base tokenizer (no added tokens) from the files in ``directory``."""

    def build_inputs_with_special_tokens(self, ids: List[int]) -> List[int]:
        """Wrap one sequence in the special tokens the model expects; none by default (GPT-1/GPT-2, like HF)."""
        return list(ids)

    # ----------------------------------------------------------------- encoding / decoding
    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> List[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode() expects a str, got {type(text).__name__}")
        ids = self._encode(text)
        return self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids

    def decode(self, ids: Ids, skip_special_tokens: bool = False) -> str:
        id_list = self._check_ids(ids)
        if skip_special_tokens:
            special = set(self.all_special_ids)
            id_list = [i for i in id_list if i not in special]
        text = self._decode(id_list)
        return _clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def batch_decode(self, sequences: Iterable[Ids], skip_special_tokens: bool = False) -> List[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    def __call__(
        self,
        text: Union[str, Sequence[str]],
        add_special_tokens: bool = False,
        truncation: bool = False,
        max_length: Optional[int] = None,
        padding: Union[bool, str] = False,
    ) -> Dict[str, Any]:
        """HF-style call: ``{"input_ids": ..., "attention_mask": ...}`` for one text or a list of texts.

        ``truncation=True`` keeps the first ``max_length`` ids (room is left for the special tokens);
        ``padding`` is False, True/"longest" (pad to the longest in the batch) or "max_length"; it pads on
        the right with ``pad_token_id``.
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text[{i}] must be a str, got {type(t).__name__}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length")
        if padding not in (False, True, "longest", "max_length"):
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")

        n_special = len(self.build_inputs_with_special_tokens([])) if add_special_tokens else 0
        batch: List[List[int]] = []
        for t in texts:
            ids = self._encode(t)
            if truncation:
                room = max_length - n_special  # type: ignore[operator]
                if room < 0:
                    raise ValueError(f"max_length={max_length} leaves no room for the {n_special} special tokens")
                ids = ids[:room]
            batch.append(self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids)
        masks = [[1] * len(ids) for ids in batch]

        if padding:
            if self.pad_token_id is None:
                raise ValueError(
                    f"padding needs a pad token but this {type(self).__name__} has none; "
                    "add one with add_special_tokens({'pad_token': ...})"
                )
            if padding == "max_length":
                if max_length is None:
                    raise ValueError("padding='max_length' needs max_length")
                target = max_length
            else:
                target = max((len(ids) for ids in batch), default=0)
            for ids, mask in zip(batch, masks):
                extra = max(0, target - len(ids))
                ids.extend([self.pad_token_id] * extra)
                mask.extend([0] * extra)

        if single:
            return {"input_ids": batch[0], "attention_mask": masks[0]}
        return {"input_ids": batch, "attention_mask": masks}

    # ----------------------------------------------------------------- token <-> id
    def convert_tokens_to_ids(self, tokens: Union[str, Sequence[str]]) -> Union[Optional[int], List[Optional[int]]]:
        """Unknown tokens map to ``unk_token_id`` (None when there is no unk token), as in HF."""
        if isinstance(tokens, str):
            found = self._token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]  # type: ignore[misc]

    def convert_ids_to_tokens(self, ids: Ids, skip_special_tokens: bool = False) -> Union[str, List[str]]:
        if isinstance(ids, int):
            return self._id_to_token(self._check_ids([ids])[0])
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(i) for i in self._check_ids(ids) if i not in special]

    def _check_ids(self, ids: Ids) -> List[int]:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        out = []
        size = self.vocab_size
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"token ids must be ints, got {i!r} ({type(i).__name__})")
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is out of range for vocabulary size {size}")
            out.append(i)
        return out

    # ----------------------------------------------------------------- special and added tokens
    @property
    def additional_special_tokens(self) -> List[str]:
        return list(self._additional_special_tokens)

    @property
    def all_special_tokens(self) -> List[str]:
        named = [t for t in self._special_tokens.values() if t is not None]
        return list(dict.fromkeys(named + self._additional_special_tokens))

    @property
    def all_special_ids(self) -> List[int]:
        return [self._token_to_id(t) for t in self.all_special_tokens]  # type: ignore[misc]

    def add_special_tokens(self, special_tokens: Dict[str, Union[str, Sequence[str]]]) -> int:
        """Set special tokens, e.g. ``{"pad_token": "<pad>", "additional_special_tokens": ["<sep>"]}``.

        Tokens missing from the vocabulary get new ids after the current last id; existing ids never change.
        Returns the number of new ids.
        """
        if not isinstance(special_tokens, dict):
            raise TypeError(f"add_special_tokens expects a dict, got {type(special_tokens).__name__}")
        named: Dict[str, str] = {}
        additional: List[str] = []
        for key, value in special_tokens.items():  # validate everything before changing anything
            if key == "additional_special_tokens":
                if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                    raise ValueError(f"additional_special_tokens must be a list of non-empty str, got {value!r}")
                additional.extend(value)
            elif key in SPECIAL_TOKEN_ATTRS:
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{key} must be a non-empty str, got {value!r}")
                named[key] = value
            else:
                raise ValueError(
                    f"unknown special-token key {key!r}; expected one of "
                    f"{', '.join(SPECIAL_TOKEN_ATTRS)}, additional_special_tokens"
                )
        before = self.vocab_size
        self._add(list(dict.fromkeys(list(named.values()) + additional)), special=True)
        self._special_tokens.update(named)
        for token in additional:
            if token not in self._additional_special_tokens:
                self._additional_special_tokens.append(token)
        return self.vocab_size - before

    def add_tokens(self, tokens: Union[str, Sequence[str]], special_tokens: bool = False) -> int:
        """Add plain tokens (kept whole when they occur in text); returns the number of new ids."""
        token_list = [tokens] if isinstance(tokens, str) else list(tokens)
        for t in token_list:
            if not isinstance(t, str) or not t:
                raise ValueError(f"tokens must be non-empty str, got {t!r}")
        before = self.vocab_size
        self._add(list(dict.fromkeys(token_list)), special=special_tokens)
        return self.vocab_size - before

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, directory: PathLike) -> List[str]:
        """Write the vocabulary files and ``tokenizer_config.json`` into ``directory``; returns the paths.

        Every file is written under a temporary name and renamed into place only after all writes
        succeeded, the config last, so a failed save never leaves a config pointing at missing files.
        """
        directory = Path(directory)
        contents = dict(self._vocab_files())
        contents.update(self._pipeline_files())
        contents[CONFIG_FILE] = json.dumps(self._config(), ensure_ascii=False, indent=2) + "\n"
        with atomic_directory(directory, merge=True, last=(CONFIG_FILE,)) as tmp:
            for name, text in contents.items():
                with open(os.path.join(tmp, name), "w", encoding="utf-8", newline="\n") as f:
                    f.write(text)
        return [str(directory / name) for name in contents]

    def _config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {"tokenizer_class": self.tokenizer_class, "model_max_length": self.model_max_length,
                                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}
        config.update(self._extra_config())
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        config.update({k: v for k, v in self._special_tokens.items() if v is not None})
        config["additional_special_tokens"] = list(self._additional_special_tokens)
        config["added_tokens_decoder"] = {
            str(i): {"content": tok, "special": special}
            for i, (tok, special) in sorted(self._added_tokens().items())
        }
        return config

    def _restore(self, config: Dict[str, Any], config_path: Path) -> None:
        """Re-add the added tokens of a saved config with their original ids, then the special-token roles."""
        decoder = config.get("added_tokens_decoder", {})
        if not isinstance(decoder, dict):
            raise ValueError(f"{config_path}: 'added_tokens_decoder' must be an object, got {type(decoder).__name__}")
        entries = []
        for key, entry in decoder.items():
            try:
                entries.append((int(key), key, entry))
            except ValueError:
                raise ValueError(f"{config_path}: added_tokens_decoder key {key!r} is not an integer id") from None
        # older saves list added tokens as {token: id} in added_tokens.json (read by _load into this key)
        listed_ids = {index for index, _, _ in entries}
        for token, index in config.get("_added_tokens_json", {}).items():
            if index not in listed_ids:
                entries.append((index, str(index), {"content": token, "special": False}))
        max_length = config.get("model_max_length")
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, (int, float)) or max_length < 1:
                raise ValueError(f"{config_path}: model_max_length must be a positive integer, got {max_length!r}")
            self.model_max_length = int(max_length)
        clean_up = config.get("clean_up_tokenization_spaces")
        if clean_up is not None:
            if not isinstance(clean_up, bool):
                raise ValueError(f"{config_path}: clean_up_tokenization_spaces must be true or false, got {clean_up!r}")
            self.clean_up_tokenization_spaces = clean_up
        self.chat_template = _read_chat_template(config, config_path)
        for index, key, entry in sorted(entries, key=lambda e: e[0]):
            token = _token_content(entry, f"{config_path}: added_tokens_decoder[{key}]")
            special = bool(entry.get("special", False)) if isinstance(entry, dict) else False
            existing = self._token_to_id(token)
            if existing is None and index != self.vocab_size:
                raise ValueError(
                    f"{config_path}: added token {token!r} has id {index} but the next free id is {self.vocab_size}"
                )
            if existing is not None and existing != index:
                raise ValueError(f"{config_path}: added token {token!r} has id {index} but the vocabulary gives {existing}")
            self._add([token], special=special)

        named: Dict[str, Any] = {
            attr: _token_content(config[attr], f"{config_path}: {attr}")
            for attr in SPECIAL_TOKEN_ATTRS
            if config.get(attr) is not None
        }
        # transformers 5 writes the list as "extra_special_tokens"
        listed = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
        if isinstance(listed, dict):  # transformers 4.x's extra_special_tokens: {attribute name: token}
            listed = list(listed.values())
        extra = [_token_content(t, f"{config_path}: additional_special_tokens") for t in listed]
        for token in [*named.values(), *extra]:
            if self._token_to_id(token) is None:
                raise ValueError(f"{config_path}: special token {token!r} is neither in the vocabulary nor an added token")
        if extra:
            named["additional_special_tokens"] = extra
        self.add_special_tokens(named)

    @classmethod
    def from_pretrained(cls: Type[T], name_or_path: PathLike) -> T:
        """Load a saved tokenizer directory, or a bundled one by name (``"gpt2"``, ``"bert-base-chinese"``)."""
        return _load(name_or_path, cls if cls is not BaseTokenizer else None)  # type: ignore[return-value]

    def __repr__(self) -> str:
        specials = ", ".join(f"{k}={v!r}" for k, v in self._special_tokens.items() if v is not None)
        return f"{type(self).__name__}(vocab_size={self.vocab_size}{', ' if specials else ''}{specials})"


def _special_properties(attr: str) -> Tuple[property, property]:
    def token(self: BaseTokenizer) -> Optional[str]:
        return self._special_tokens[attr]

    def token_id(self: BaseTokenizer) -> Optional[int]:
        value = self._special_tokens[attr]
        return None if value is None else self._token_to_id(value)

    return property(token, doc=f"The {attr} string, or None."), property(token_id, doc=f"Id of the {attr}, or None.")


for _attr in SPECIAL_TOKEN_ATTRS:
    _tok_prop, _id_prop = _special_properties(_attr)
    setattr(BaseTokenizer, _attr, _tok_prop)
    setattr(BaseTokenizer, _attr + "_id", _id_prop)
del _attr, _tok_prop, _id_prop


def _clean_up_tokenization(text: str) -> str:
    """HF's clean-up of decoded text: no space before , . ? ! and English contractions."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text


def _token_content(value: Any, where: str) -> str:
    """Special tokens appear as plain strings or, in HF configs, as {"content": ...} objects."""
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a non-empty token string, got {value!r}")
    return value


# ===================================================================== character level
class CharTokenizer(BaseTokenizer):
    """One id per character, ids in the order given (sorted characters when built with :meth:`from_text`)."""

    tokenizer_class = "CharTokenizer"
    VOCAB_FILE = "char_vocab.json"

    def __init__(self, chars: Iterable[str]) -> None:
        super().__init__()
        self._chars: List[str] = list(chars)
        for i, c in enumerate(self._chars):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"character vocabulary entry {i} must be a single character, got {c!r}")
        self._stoi: Dict[str, int] = {c: i for i, c in enumerate(self._chars)}
        if len(self._stoi) != len(self._chars):
            dupes = sorted({c for c in self._chars if self._chars.count(c) > 1})
            raise ValueError(f"duplicate characters in the vocabulary: {dupes!r}")
        self._added: List[str] = []  # ids len(chars), len(chars)+1, ...
        self._added_ids: Dict[str, int] = {}
        self._specials: set = set()
        self._splitter: Optional[re.Pattern] = None

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Vocabulary = the sorted set of characters of ``text`` (65 for tiny shakespeare)."""
        if not text:
            raise ValueError("CharTokenizer.from_text needs a non-empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self._chars) + len(self._added)

    def get_vocab(self) -> Dict[str, int]:
        return {**self._stoi, **self._added_ids}

    def _token_to_id(self, token: str) -> Optional[int]:
        found = self._added_ids.get(token)
        return self._stoi.get(token) if found is None else found

    def _id_to_token(self, index: int) -> str:
        return self._chars[index] if index < len(self._chars) else self._added[index - len(self._chars)]

    def _encode(self, text: str) -> List[int]:
        pieces = self._splitter.split(text) if self._splitter else [text]
        ids: List[int] = []
        unknown: List[str] = []
        unk_id = self.unk_token_id
        # re.split with one capture group alternates plain text (even index) and added tokens (odd index)
        for n, piece in enumerate(pieces):
            if n % 2:
                ids.append(self._added_ids[piece])
                continue
            try:
                ids.extend([self._stoi[c] for c in piece])
            except KeyError:
                for c in piece:
                    i = self._stoi.get(c, unk_id)
                    if i is None:
                        unknown.append(c)
                    else:
                        ids.append(i)
        if unknown:
            shown = "".join(sorted(set(unknown)))
            warnings.warn(
                f"CharTokenizer dropped {len(unknown)} character(s) not in its vocabulary: {shown!r}; "
                "add an unk token with add_special_tokens({'unk_token': ...}) to keep a placeholder",
                stacklevel=3,
            )
        return ids

    def _decode(self, ids: List[int]) -> str:
        return "".join(self._id_to_token(i) for i in ids)

    def _add(self, tokens: Sequence[str], special: bool) -> None:
        for token in tokens:
            if self._token_to_id(token) is None:
                self._added_ids[token] = self.vocab_size
                self._added.append(token)
            if special:
                self._specials.add(token)
        # longest first so "<pad>" wins over a shorter added token that is its prefix
        ordered = sorted(self._added, key=len, reverse=True)
        self._splitter = re.compile("(" + "|".join(map(re.escape, ordered)) + ")") if ordered else None

    def _added_tokens(self) -> Dict[int, Tuple[str, bool]]:
        out = {self._stoi[t]: (t, True) for t in self._specials if t in self._stoi}
        out.update({self._added_ids[t]: (t, t in self._specials) for t in self._added})
        return out

    def _vocab_files(self) -> Dict[str, str]:
        return {self.VOCAB_FILE: json.dumps(self._stoi, ensure_ascii=False, indent=0) + "\n"}

    @classmethod
    def _from_files(cls, directory: Path, config: Dict[str, Any]) -> "CharTokenizer":
        path = _require_files(directory, cls, [cls.VOCAB_FILE])[0]
        vocab = _read_json(path)
        if not isinstance(vocab, dict):
            raise ValueError(f"{path}: expected an object mapping characters to ids")
        return cls(_ordered_tokens(vocab, path))


# ===================================================================== tokenizers-library backed
class _BackendTokenizer(BaseTokenizer):
    """Common code for tokenizers wrapping a ``tokenizers.Tokenizer``."""

    def __init__(self, backend: Tokenizer) -> None:
        super().__init__()
        self._backend = backend

    @property
    def vocab_size(self) -> int:
        # the tokenizers library builds the whole vocabulary map to count it (~20 ms for GPT-2, paid by every
        # decode() through _check_ids): count once, again only after _add
        size = self.__dict__.get("_vocab_size")
        if size is None:
            size = self._vocab_size = self._backend.get_vocab_size(with_added_tokens=True)
        return size

    def get_vocab(self) -> Dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def _token_to_id(self, token: str) -> Optional[int]:
        return self._backend.token_to_id(token)

    def _id_to_token(self, index: int) -> str:
        return self._backend.id_to_token(index)

    def _encode(self, text: str) -> List[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def _decode(self, ids: List[int]) -> str:
        return self._backend.decode(ids, skip_special_tokens=False)

    def _add(self, tokens: Sequence[str], special: bool) -> None:
        # Special tokens are matched in the raw text; plain added tokens after normalisation (HF's defaults).
        added = [AddedToken(t, special=special, normalized=not special) for t in tokens]
        self._vocab_size = None
        if special:
            self._backend.add_special_tokens(added)
        else:
            self._backend.add_tokens(added)

    def _added_tokens(self) -> Dict[int, Tuple[str, bool]]:
        return {i: (t.content, t.special) for i, t in self._backend.get_added_tokens_decoder().items()}

    def _pipeline_files(self) -> Dict[str, str]:
        return {TOKENIZER_FILE: self._backend.to_str(pretty=False) + "\n"}  # compact: 1.3 MB for GPT-2

    # ----------------------------------------------------------------- tokenizer.json
    MODEL_TYPE: ClassVar[str]  # the ``model.type`` of a tokenizer.json this class reads

    @classmethod
    def _from_tokenizer_json(cls, directory: Path, config: Dict[str, Any]) -> "_BackendTokenizer":
        """Build the tokenizer from ``tokenizer.json``: its normaliser, pre-tokeniser, model, decoder and added
        tokens are used as saved (the ``tokenizers`` library reads them); the class adds its default specials."""
        path = directory / TOKENIZER_FILE
        data = _read_tokenizer_json(path)
        model = data["model"]
        if model.get("type") != cls.MODEL_TYPE:
            raise ValueError(f"{path}: a {cls.__name__} needs a {cls.MODEL_TYPE} model, the file holds "
                             f"{model.get('type')!r}")
        try:
            backend = Tokenizer.from_str(json.dumps(data))
        except Exception as e:  # the Rust error names no file
            raise ValueError(f"{path}: the tokenizers library cannot read it: {e}") from e
        vocab = model.get("vocab")
        if not isinstance(vocab, dict):
            raise ValueError(f"{path}: model.vocab must map tokens to ids")
        merges = [tuple(m.split(" ")) for m in model.get("merges", [])]
        return cls._from_backend(backend, vocab, merges, config, path)  # type: ignore[attr-defined]


class _BPETokenizer(_BackendTokenizer):
    """vocab.json + merges.txt tokenizers (GPT-2 and GPT-1)."""

    MODEL_TYPE = "BPE"

    VOCAB_FILE = "vocab.json"
    MERGES_FILE = "merges.txt"

    def __init__(self, backend: Tokenizer, vocab: Dict[str, int], merges: List[Tuple[str, str]]) -> None:
        super().__init__(backend)
        # the Rust model does not hand its merges back, so keep them for save_pretrained
        self._vocab = vocab
        self._merges = merges

    def _vocab_files(self) -> Dict[str, str]:
        ordered = dict(sorted(self._vocab.items(), key=lambda kv: kv[1]))
        merges = "".join(f"{a} {b}\n" for a, b in self._merges)
        return {
            self.VOCAB_FILE: json.dumps(ordered, ensure_ascii=False) + "\n",
            self.MERGES_FILE: "#version: 0.2\n" + merges,
        }

    @classmethod
    def _read_bpe_files(cls, directory: Path) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
        vocab_path, merges_path = _require_files(directory, cls, [cls.VOCAB_FILE, cls.MERGES_FILE])
        vocab = _read_json(vocab_path)
        if not isinstance(vocab, dict):
            raise ValueError(f"{vocab_path}: expected an object mapping tokens to ids")
        merges: List[Tuple[str, str]] = []
        with open(merges_path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line or (lineno == 1 and line.startswith("#version")):
                    continue
                parts = line.split(" ")
                if len(parts) != 2 or not all(parts):
                    raise ValueError(f"{merges_path}:{lineno}: expected two space-separated symbols, got {line!r}")
                merges.append((parts[0], parts[1]))
        return vocab, merges

    @staticmethod
    def _build(directory: Optional[Path], vocab: Dict[str, int], merges: List[Tuple[str, str]], **kwargs: Any):
        where = f"the BPE files in {directory}" if directory else "the given vocab/merges"
        _ordered_tokens(vocab, where)
        try:
            return models.BPE(vocab, merges, **kwargs)
        except Exception as e:  # the Rust error (e.g. a merge of unknown symbols) names no file
            raise ValueError(f"cannot build a BPE model from {where}: {e}") from e


class GPT2Tokenizer(_BPETokenizer):
    """GPT-2 byte-level BPE; ``<|endoftext|>`` is bos, eos and unk (as in HF). ``from_pretrained("gpt2")``
    loads the bundled files."""

    tokenizer_class = "GPT2Tokenizer"
    ENDOFTEXT = "<|endoftext|>"

    def __init__(self, vocab: Dict[str, int], merges: List[Tuple[str, str]], _directory: Optional[Path] = None,
                 _backend: Optional[Tokenizer] = None) -> None:
        backend = _backend
        if backend is None:  # no unk needed: every byte has a token, so any text encodes
            backend = Tokenizer(self._build(_directory, vocab, merges))
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = decoders.ByteLevel()
        super().__init__(backend, vocab, merges)
        if self.ENDOFTEXT in vocab:
            self.add_special_tokens({"bos_token": self.ENDOFTEXT, "eos_token": self.ENDOFTEXT, "unk_token": self.ENDOFTEXT})

    @classmethod
    def from_pretrained(cls, name_or_path: PathLike = "gpt2") -> "GPT2Tokenizer":
        return super().from_pretrained(name_or_path)

    def truncated(self, num_merges: int) -> "GPT2Tokenizer":
        """The same byte-level BPE cut to its first `num_merges` merges: vocabulary = the 256 byte symbols + one
        token per kept merge (same ids as here) + ``<|endoftext|>``. BPE learns merges in order, so every kept merge
        joins symbols that exist; words whose merges were cut are spelled with shorter pieces. A small model then
        pays for a few thousand output rows instead of 50,257 (`tokenizer: gpt2:4096` in the recipes)."""
        if not 0 < num_merges <= len(self._merges):
            raise ValueError(f"num_merges={num_merges}: expected 1..{len(self._merges)}")
        if len(self) > len(self._vocab):
            raise ValueError("truncate the BPE before adding tokens to it")
        layout = "256 byte symbols followed by one token per merge"
        if sorted(i for i in self._vocab.values() if i < 256) != list(range(256)):
            raise ValueError(f"this vocabulary is not laid out as {layout}; it cannot be truncated by merge count")
        for i, (a, b) in enumerate(self._merges[:num_merges]):
            if self._vocab.get(a + b) != 256 + i:
                raise ValueError(f"this vocabulary is not laid out as {layout} (merge {i} {a!r} {b!r}); it cannot "
                                 "be truncated by merge count")
        size = 256 + num_merges
        vocab = {t: i for t, i in self._vocab.items() if i < size}
        if self.ENDOFTEXT in self._vocab:
            vocab[self.ENDOFTEXT] = size
        return GPT2Tokenizer(vocab, list(self._merges[:num_merges]))

    @classmethod
    def _from_files(cls, directory: Path, config: Dict[str, Any]) -> "GPT2Tokenizer":
        vocab, merges = cls._read_bpe_files(directory)
        return cls(vocab, merges, _directory=directory)

    @classmethod
    def _from_backend(cls, backend: Tokenizer, vocab: Dict[str, int], merges: List[Tuple[str, str]],
                      config: Dict[str, Any], path: Path) -> "GPT2Tokenizer":
        return cls(vocab, merges, _backend=backend)

    def _byte_level_state(self) -> Dict[str, Any]:
        pre = self._backend.pre_tokenizer
        state = json.loads(pre.__getstate__()) if pre is not None else {}
        return state if state.get("type") == "ByteLevel" else {}

    def _apply_config(self, config: Dict[str, Any], config_path: Path) -> None:
        # add_prefix_space (default false) decides, whatever tokenizer.json says (HF 4 and 5 do the same)
        want = config.get("add_prefix_space", False)
        if not isinstance(want, bool):
            raise ValueError(f"{config_path}: add_prefix_space must be true or false, got {want!r}")
        state = self._byte_level_state()
        if state and state.get("add_prefix_space") != want:
            state.pop("type")
            self._backend.pre_tokenizer = pre_tokenizers.ByteLevel(**{**state, "add_prefix_space": want})

    def _extra_config(self) -> Dict[str, Any]:
        return {"add_prefix_space": bool(self._byte_level_state().get("add_prefix_space", False))}


class OpenAIGPTTokenizer(_BPETokenizer):
    """GPT-1 (openai-gpt) BPE: lower-cased, BERT-style pre-tokenisation, ``</w>`` marks the end of a word.

    openai-gpt's own vocabulary has no ``<unk>`` entry; it then gets the next free id (where HF puts it too),
    inside the BPE model so that unseen characters encode to it. Add the fine-tuning tokens with
    ``add_special_tokens({"additional_special_tokens": ["_start_", "_delimiter_", "_classify_"]})``.
    """

    tokenizer_class = "OpenAIGPTTokenizer"
    SUFFIX = "</w>"
    TASK_TOKENS = ("_start_", "_delimiter_", "_classify_")

    def __init__(
        self,
        vocab: Dict[str, int],
        merges: List[Tuple[str, str]],
        unk_token: str = "<unk>",
        _directory: Optional[Path] = None,
        _backend: Optional[Tokenizer] = None,
    ) -> None:
        backend = _backend
        if backend is None:
            if unk_token not in vocab:
                vocab = {**vocab, unk_token: len(vocab)}
            model = self._build(_directory, vocab, merges, unk_token=unk_token, end_of_word_suffix=self.SUFFIX,
                                fuse_unk=False)
            backend = Tokenizer(model)
            backend.normalizer = normalizers.BertNormalizer(lowercase=True)
            backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            backend.decoder = decoders.BPEDecoder(suffix=self.SUFFIX)
        super().__init__(backend, vocab, merges)
        if backend.token_to_id(unk_token) is not None:
            self.add_special_tokens({"unk_token": unk_token})

    @classmethod
    def _from_files(cls, directory: Path, config: Dict[str, Any]) -> "OpenAIGPTTokenizer":
        vocab, merges = cls._read_bpe_files(directory)
        unk = _token_content(config.get("unk_token", "<unk>"), f"{directory / CONFIG_FILE}: unk_token")
        return cls(vocab, merges, unk_token=unk, _directory=directory)

    @classmethod
    def _from_backend(cls, backend: Tokenizer, vocab: Dict[str, int], merges: List[Tuple[str, str]],
                      config: Dict[str, Any], path: Path) -> "OpenAIGPTTokenizer":
        model = json.loads(backend.to_str())["model"]
        unk = model.get("unk_token") or _token_content(config.get("unk_token", "<unk>"), f"{path}: unk_token")
        return cls(vocab, merges, unk_token=unk, _backend=backend)


# Characters written without spaces between them (CJK ideographs and punctuation, kana, full-width forms).
_WIDE_CHAR = (
    "[\u2e80-\u2fdf\u3000-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0002fa1f]"
)
_SPACE_NEXT_TO_WIDE = re.compile(f"(?<={_WIDE_CHAR}) | (?={_WIDE_CHAR})")


class BertTokenizer(_BackendTokenizer):
    """BERT WordPiece (``vocab.txt``), e.g. bert-base-chinese, the tokenizer of Chinese GPT-2 checkpoints.

    CJK characters become one token each; ``decode`` joins ``##`` pieces and writes CJK text without spaces.
    ``[CLS] ... [SEP]`` is added only with ``add_special_tokens=True``.
    """

    tokenizer_class = "BertTokenizer"
    VOCAB_FILE = "vocab.txt"
    DEFAULT_SPECIALS = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }

    MODEL_TYPE = "WordPiece"

    def __init__(self, vocab: Union[Dict[str, int], Sequence[str]], do_lower_case: bool = True, _source: str = "vocab",
                 _backend: Optional[Tokenizer] = None) -> None:
        if not isinstance(vocab, dict):
            vocab = {t: i for i, t in enumerate(vocab)}
        if not isinstance(do_lower_case, bool):
            raise ValueError(f"do_lower_case must be a bool, got {do_lower_case!r}")
        _ordered_tokens(vocab, _source)
        if self.DEFAULT_SPECIALS["unk_token"] not in vocab:
            raise ValueError(f"{_source} has no {self.DEFAULT_SPECIALS['unk_token']} token")
        self._vocab = vocab
        self.do_lower_case = do_lower_case
        backend = _backend
        if backend is None:
            backend = Tokenizer(models.WordPiece(vocab, unk_token=self.DEFAULT_SPECIALS["unk_token"],
                                                 max_input_chars_per_word=100))
            backend.normalizer = normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case
            )
            backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
            cls_token, sep_token = self.DEFAULT_SPECIALS["cls_token"], self.DEFAULT_SPECIALS["sep_token"]
            if cls_token in vocab and sep_token in vocab:  # what HF adds with add_special_tokens=True (ms_gpt
                # adds them itself in build_inputs_with_special_tokens; this is for transformers reading the file)
                backend.post_processor = processors.TemplateProcessing(
                    single=f"{cls_token} $A {sep_token}", pair=f"{cls_token} $A {sep_token} $B:1 {sep_token}:1",
                    special_tokens=[(cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])])
        super().__init__(backend)
        self.add_special_tokens({k: v for k, v in self.DEFAULT_SPECIALS.items() if v in vocab})

    @classmethod
    def from_pretrained(cls, name_or_path: PathLike = "bert-base-chinese") -> "BertTokenizer":
        return super().from_pretrained(name_or_path)

    def build_inputs_with_special_tokens(self, ids: List[int]) -> List[int]:
        if self.cls_token_id is None or self.sep_token_id is None:
            raise ValueError("add_special_tokens=True needs cls_token and sep_token in the vocabulary")
        return [self.cls_token_id, *ids, self.sep_token_id]

    def _decode(self, ids: List[int]) -> str:
        return _SPACE_NEXT_TO_WIDE.sub("", super()._decode(ids))

    def _vocab_files(self) -> Dict[str, str]:
        return {self.VOCAB_FILE: "".join(t + "\n" for t in _ordered_tokens(self._vocab, "vocab"))}

    # tokenizer_config.json key -> (BertNormalizer field, HF's default when the key is absent)
    NORMALIZER_OPTIONS = {"do_lower_case": ("lowercase", True), "strip_accents": ("strip_accents", None),
                          "tokenize_chinese_chars": ("handle_chinese_chars", True)}

    def _normalizer_state(self) -> Dict[str, Any]:
        normalizer = self._backend.normalizer
        state = json.loads(normalizer.__getstate__()) if normalizer is not None else {}
        return state if state.get("type") == "BertNormalizer" else {}

    def _apply_config(self, config: Dict[str, Any], config_path: Path) -> None:
        # as HF's BERT tokenizers: these options (or their defaults) rebuild a tokenizer.json normaliser that differs
        state = self._normalizer_state()
        if not state:
            return
        want = {}
        for key, (name, default) in self.NORMALIZER_OPTIONS.items():
            value = config.get(key, default)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{config_path}: {key} must be true, false or null, got {value!r}")
            want[name] = value
        if any(state.get(name) != value for name, value in want.items()):
            state.pop("type")
            self._backend.normalizer = normalizers.BertNormalizer(**{**state, **want})
        self.do_lower_case = bool(want["lowercase"])

    def _extra_config(self) -> Dict[str, Any]:
        state = self._normalizer_state()
        out: Dict[str, Any] = {"do_lower_case": self.do_lower_case}
        if state:
            out.update({key: state.get(name) for key, (name, _) in self.NORMALIZER_OPTIONS.items()})
        return out

    @classmethod
    def _from_files(cls, directory: Path, config: Dict[str, Any]) -> "BertTokenizer":
        path = _require_files(directory, cls, [cls.VOCAB_FILE])[0]
        with open(path, encoding="utf-8", newline="") as f:
            # split on "\n" only: bert vocabularies contain tokens such as U+2028 that str.splitlines() breaks on
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        tokens = [line.rstrip("\r") for line in lines]
        seen: Dict[str, int] = {}
        for lineno, token in enumerate(tokens, 1):
            if token in seen:
                raise ValueError(f"{path}:{lineno}: token {token!r} already appears on line {seen[token] + 1}")
            seen[token] = lineno - 1
        return cls(tokens, do_lower_case=config.get("do_lower_case", True), _source=str(path))

    @classmethod
    def _from_backend(cls, backend: Tokenizer, vocab: Dict[str, int], merges: List[Tuple[str, str]],
                      config: Dict[str, Any], path: Path) -> "BertTokenizer":
        normalizer = json.loads(backend.to_str()).get("normalizer") or {}
        lower = normalizer.get("lowercase", config.get("do_lower_case", True))
        return cls(vocab, do_lower_case=bool(lower), _source=str(path), _backend=backend)


# ===================================================================== loading
_CLASSES: Dict[str, Type[BaseTokenizer]] = {
    "CharTokenizer": CharTokenizer,
    "GPT2Tokenizer": GPT2Tokenizer,
    "GPT2TokenizerFast": GPT2Tokenizer,
    "OpenAIGPTTokenizer": OpenAIGPTTokenizer,
    "OpenAIGPTTokenizerFast": OpenAIGPTTokenizer,
    "BertTokenizer": BertTokenizer,
    "BertTokenizerFast": BertTokenizer,
}
# class names that say "whatever tokenizer.json holds": the class then comes from the file's model
_GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")

_LOOKED_FOR = (
    f"{TOKENIZER_FILE}, {CONFIG_FILE}, vocab.json + merges.txt (GPT-2 / GPT-1 BPE), vocab.txt (BERT WordPiece), "
    "char_vocab.json (character level)"
)


def load_tokenizer(path_or_name: PathLike) -> BaseTokenizer:
    """Load a tokenizer from a directory (or a file inside it) or a bundled name such as ``"gpt2"``;
    ``"gpt2:N"`` is the GPT-2 BPE cut to its first N merges (see :meth:`GPT2Tokenizer.truncated`).

    Every layout the Hugging Face hub serves is read: ``tokenizer.json`` (preferred when present: its
    normaliser, pre-tokeniser, model, decoder and added tokens are used as saved, through the ``tokenizers``
    library), else the legacy vocabulary files; ``tokenizer_config.json`` (class, special tokens, do_lower_case,
    model_max_length, ``added_tokens_decoder``), ``special_tokens_map.json`` (overrides its special tokens, as
    in HF) and ``added_tokens.json``.

    The class comes from ``tokenizer_config.json`` when it names one, otherwise from the files present:
    ``tokenizer.json`` -> by its model (WordPiece: :class:`BertTokenizer`; BPE with the ``</w>`` suffix:
    :class:`OpenAIGPTTokenizer`; other BPE: :class:`GPT2Tokenizer`); ``char_vocab.json`` -> :class:`CharTokenizer`;
    ``vocab.json`` + ``merges.txt`` -> :class:`OpenAIGPTTokenizer` if the vocabulary uses the ``</w>`` end-of-word
    convention, else :class:`GPT2Tokenizer`; ``vocab.txt`` -> :class:`BertTokenizer`.
    """
    name, _, merges = str(path_or_name).partition(":")
    if merges and name in BUNDLED_TOKENIZERS and not Path(str(path_or_name)).exists():
        if not merges.isdigit():
            raise ValueError(f"tokenizer {str(path_or_name)!r}: expected {name}:<number of merges>")
        tokenizer = _load(name, None)
        if not isinstance(tokenizer, GPT2Tokenizer):
            raise ValueError(f"tokenizer {str(path_or_name)!r}: only a GPT-2 BPE can be truncated")
        return tokenizer.truncated(int(merges))
    return _load(path_or_name, None)


def _resolve_directory(path_or_name: PathLike) -> Path:
    path = Path(path_or_name)
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    if str(path_or_name) in BUNDLED_TOKENIZERS:
        return BUNDLED_TOKENIZERS[str(path_or_name)]
    raise FileNotFoundError(
        f"tokenizer directory {str(path_or_name)!r} does not exist and is not a bundled tokenizer name "
        f"({', '.join(sorted(BUNDLED_TOKENIZERS))})"
    )


def _load(path_or_name: PathLike, expected: Optional[Type[BaseTokenizer]]) -> BaseTokenizer:
    directory = _resolve_directory(path_or_name)
    config_path = directory / CONFIG_FILE
    config: Dict[str, Any] = {}
    if config_path.is_file():
        config = _read_json(config_path)
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: expected a JSON object")

    _merge_legacy_files(directory, config)
    name = config.get("tokenizer_class")
    named_in = config_path
    if name is None and (directory / "config.json").is_file():  # as HF's AutoTokenizer: the model config may name it
        data = _read_json(directory / "config.json")
        name = data.get("tokenizer_class") if isinstance(data, dict) else None
        named_in = directory / "config.json"
    if name in _GENERIC_CLASSES and (directory / TOKENIZER_FILE).is_file():
        name = None
    if name is not None:
        if name not in _CLASSES:
            raise ValueError(
                f"{named_in}: tokenizer_class {name!r} is not supported; known: {', '.join(sorted(_CLASSES))}"
            )
        cls = _CLASSES[name]
    else:
        cls = expected or _detect_class(directory)
    if expected is not None and not issubclass(cls, expected):
        raise ValueError(f"{directory} holds a {cls.__name__}, not a {expected.__name__}")
    if issubclass(cls, _BackendTokenizer) and (directory / TOKENIZER_FILE).is_file():
        tokenizer = cls._from_tokenizer_json(directory, config)
    else:
        tokenizer = cls._from_files(directory, config)
    tokenizer._apply_config(config, config_path)
    tokenizer._restore(config, config_path)
    return tokenizer


def _read_chat_template(config: Dict[str, Any], config_path: Path) -> Optional[str]:
    """The chat template of a saved tokenizer: ``chat_template.jinja`` beside the config (transformers 5), else the
    config's ``chat_template`` (a string, or HF's list of named templates: the one named "default")."""
    jinja = config_path.parent / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    value = config.get("chat_template")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
    raise ValueError(f"{config_path}: chat_template must be a Jinja template string or a list of "
                     f"{{name, template}} with a 'default' one, got {type(value).__name__}")


def _merge_legacy_files(directory: Path, config: Dict[str, Any]) -> None:
    """Fold ``special_tokens_map.json`` (its entries win over the config's, as in HF) and ``added_tokens.json``
    ({token: id}, kept under ``_added_tokens_json`` for :meth:`BaseTokenizer._restore`) into ``config``."""
    path = directory / SPECIAL_TOKENS_MAP_FILE
    if path.is_file():
        specials = _read_json(path)
        if not isinstance(specials, dict):
            raise ValueError(f"{path}: expected a JSON object of special tokens")
        for key, value in specials.items():
            if key in SPECIAL_TOKEN_ATTRS or key in ("additional_special_tokens", "extra_special_tokens"):
                config[key] = value
    path = directory / ADDED_TOKENS_FILE
    if path.is_file():
        added = _read_json(path)
        if not isinstance(added, dict) or not all(
            isinstance(t, str) and isinstance(i, int) and not isinstance(i, bool) for t, i in added.items()
        ):
            raise ValueError(f"{path}: expected a JSON object mapping tokens to integer ids")
        config["_added_tokens_json"] = added


def _read_tokenizer_json(path: Path) -> Dict[str, Any]:
    """``tokenizer.json`` as a dict the installed ``tokenizers`` reads: merges saved as ``[a, b]`` pairs (the
    format of tokenizers >= 0.20, written by transformers 5) become the ``"a b"`` strings every version reads."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path}: expected a tokenizers JSON object with a 'model' entry")
    merges = data["model"].get("merges")
    if isinstance(merges, list):
        joined = []
        for n, merge in enumerate(merges):
            if isinstance(merge, list):
                if len(merge) != 2 or not all(isinstance(p, str) and p and " " not in p for p in merge):
                    raise ValueError(f"{path}: model.merges[{n}] = {merge!r} is not a pair of symbols without spaces")
                merge = f"{merge[0]} {merge[1]}"
            elif not isinstance(merge, str):
                raise ValueError(f"{path}: model.merges[{n}] = {merge!r} is neither a pair nor a string")
            joined.append(merge)
        data["model"]["merges"] = joined
    return data


def _detect_from_tokenizer_json(path: Path) -> Type[BaseTokenizer]:
    model = _read_tokenizer_json(path)["model"]
    kind = model.get("type")
    if kind == "WordPiece":
        return BertTokenizer
    if kind == "BPE":
        return OpenAIGPTTokenizer if model.get("end_of_word_suffix") == OpenAIGPTTokenizer.SUFFIX else GPT2Tokenizer
    raise ValueError(f"{path}: model type {kind!r} is not supported (BPE or WordPiece)")


def _detect_class(directory: Path) -> Type[BaseTokenizer]:
    if (directory / TOKENIZER_FILE).is_file():
        return _detect_from_tokenizer_json(directory / TOKENIZER_FILE)
    if (directory / CharTokenizer.VOCAB_FILE).is_file():
        return CharTokenizer
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        vocab = _read_json(directory / "vocab.json")
        if isinstance(vocab, dict) and any(k.endswith(OpenAIGPTTokenizer.SUFFIX) for k in vocab):
            return OpenAIGPTTokenizer
        return GPT2Tokenizer
    if (directory / BertTokenizer.VOCAB_FILE).is_file():
        return BertTokenizer
    raise FileNotFoundError(f"no tokenizer files in {directory}: looked for {_LOOKED_FOR}")


def _require_files(directory: Path, cls: Type[BaseTokenizer], names: List[str]) -> List[Path]:
    paths = [directory / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{cls.__name__} needs {', '.join(names)} in {directory}; missing: {', '.join(missing)}")
    return paths


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def _ordered_tokens(vocab: Dict[str, int], where: Any) -> List[str]:
    """Tokens sorted by id, checking the ids are exactly 0..n-1 (added tokens are appended after them)."""
    ids = sorted(vocab.values()) if all(isinstance(i, int) and not isinstance(i, bool) for i in vocab.values()) else None
    if ids != list(range(len(vocab))):
        raise ValueError(f"{where}: token ids must be the integers 0..{len(vocab) - 1}, each used once")
    return sorted(vocab, key=vocab.__getitem__)
