"""Where bundled files live (paths in configs are relative to the working directory or to the project root), and
the one way files are written: atomically (`atomic_path`, `atomic_write`, `atomic_directory`), so a reader sees the
old file or the new one, never a half-written one.

Must not import: any ms_gpt module.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from typing import IO, Iterator, Sequence

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_path(path: str) -> str:
    """`path` as given if it exists, else relative to the project root (so configs work from any directory)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(PROJECT_ROOT, path)
    return candidate if os.path.exists(candidate) else path


def _temp_beside(path: str) -> str:
    """A fresh hidden name in `path`'s directory; it keeps the extension, which some writers read the format from
    (matplotlib's savefig, MindSpore's save_checkpoint)."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    stem, ext = os.path.splitext(name)
    return os.path.join(directory, f".{stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary file name beside `path` for a writer that takes a name; when the block succeeds the file
    replaces `path` in one rename, else it is removed."""
    tmp = _temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: str = "utf-8", **open_kwargs) -> Iterator[IO]:
    """`open(path, mode)` for writing, atomically (see `atomic_path`); text modes default to UTF-8."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding, **open_kwargs) as f:
            yield f


@contextlib.contextmanager
def atomic_directory(directory: str, merge: bool = False, last: Sequence[str] = ()) -> Iterator[str]:
    """Yield a new temporary directory beside `directory` to write files into; when the block succeeds they are
    published, else it is removed. A `directory` that does not exist yet is the temporary one renamed. An existing
    one is replaced as a whole (merge=False), or keeps its other files while each written file replaces its
    namesake (merge=True), the names in `last` last and in that order (a config after the files it points at)."""
    directory = os.path.abspath(os.fspath(directory))
    parent, name = os.path.split(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        yield tmp
        if not os.path.exists(directory):
            os.rename(tmp, directory)
        elif not merge:
            shutil.rmtree(directory)
            os.replace(tmp, directory)
        else:
            written = sorted(os.listdir(tmp), key=lambda n: (list(last).index(n) if n in last else -1, n))
            for file in written:
                os.replace(os.path.join(tmp, file), os.path.join(directory, file))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
