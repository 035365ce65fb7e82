"""Where the backend keeps files of its own: the user's cache folder for segparts, from
platformdirs: ~/.cache/segparts on Linux ($XDG_CACHE_HOME/segparts when that is set),
~/Library/Caches/segparts on macOS, %LOCALAPPDATA%\\segparts\\Cache on Windows.

The token files are not here: their folder is `segparts.client.runtime_dir`, because the add-on's
copy of client.py must find them too, and Blender's Python has no platformdirs.
"""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_cache_path


def cache_dir() -> Path:
    return user_cache_path("segparts", appauthor=False)
