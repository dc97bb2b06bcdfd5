import os

os.environ.setdefault("GLOG_v", "3")  # before mindspore is imported anywhere

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.fixture(autouse=True)
def _pynative_and_seeded():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(autouse=True)
def _environment_restored():
    """Undo what a test's imports write into os.environ (`import mindnlp` sets MS_ALLOC_CONF, HF_ENDPOINT, ...), so a
    later test's subprocess starts from the same environment whatever ran before it (MindSpore prints its allocator
    settings on stdout when MS_ALLOC_CONF is set)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
