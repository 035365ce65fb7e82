"""Build hook only (metadata lives in pyproject.toml): ship the model manifest inside the package.

models/manifest.json stays the one source in git (DESIGN: models/ holds the manifest); building a
wheel (`pip install .`, the add-on's bundled backend) copies it to segparts/manifest.json, where
segparts.models finds it when no source checkout is around."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MANIFEST = Path(__file__).resolve().parent / "models" / "manifest.json"


class build_py_with_manifest(build_py):
    def run(self):
        super().run()
        if not MANIFEST.is_file():
            raise SystemExit(f"{MANIFEST} is missing: the model manifest must be built into the package")
        target = Path(self.build_lib) / "segparts" / "manifest.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(MANIFEST), str(target))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / "segparts" / "manifest.json")]


setup(cmdclass={"build_py": build_py_with_manifest})
