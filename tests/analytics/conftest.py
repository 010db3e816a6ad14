import pytest

from analytics import filecache


@pytest.fixture(params=["files", "cached"])
def read_mode(request, tmp_path):
    """Every read test twice: straight from the files, and through the gateway's partition cache
    (enabled for the whole of ``tmp_path``'s snapshot folders, so a test's later reads reuse it)."""
    folders = [tmp_path, tmp_path / "snap"]
    if request.param == "cached":
        for folder in folders:
            filecache.enable(folder, 64 * 1_048_576)
    yield request.param
    for folder in folders:
        filecache.enable(folder, 0)
