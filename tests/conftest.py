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
