from pathlib import Path

import pytest
from ssl_testutil import make_clip_list


@pytest.fixture(scope="session")
def clip_list(tmp_path_factory) -> Path:
    """12 labelled 40-frame 48x64 videos + 1 corrupt file."""
    return make_clip_list(tmp_path_factory.mktemp("clips"))
