"""Fixtures several test modules use."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (its timing-sensitive kill/resume runs), restored after.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
