"""Fleet fixtures: `receiver`, a real webhook receiver on 127.0.0.1 that records what it is sent."""

import pytest

from tests.fleet.helpers import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
