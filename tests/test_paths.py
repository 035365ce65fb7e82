"""The backend's own folders: platformdirs' user cache folder for segparts, with the existing
Linux paths and environment overrides unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from segparts import models, naming, paths


def test_cache_folder_is_platformdirs_and_on_linux_the_usual_one(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert paths.cache_dir() == Path(platformdirs.user_cache_dir("segparts", appauthor=False))
    if sys.platform.startswith("linux"):
        assert paths.cache_dir() == Path.home() / ".cache" / "segparts"
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert paths.cache_dir() == tmp_path / "segparts"


def test_models_and_name_cache_live_there_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "REPO_ROOT", tmp_path / "not-a-checkout")  # as an installed wheel
    monkeypatch.delenv("SEGPARTS_MODELS", raising=False)
    monkeypatch.delenv(naming.ENV_CACHE, raising=False)
    assert models.models_dir() == paths.cache_dir() / "models"
    assert naming.default_cache_path() == paths.cache_dir() / "part_names.json"
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path / "weights"))
    monkeypatch.setenv(naming.ENV_CACHE, str(tmp_path / "names.json"))
    assert models.models_dir() == tmp_path / "weights"
    assert naming.default_cache_path() == tmp_path / "names.json"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pre-platformdirs paths were Linux's")
def test_linux_paths_are_unchanged(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(models, "REPO_ROOT", tmp_path)
    monkeypatch.delenv("SEGPARTS_MODELS", raising=False)
    assert models.models_dir() == Path.home() / ".cache" / "segparts" / "models"
