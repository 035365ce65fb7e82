#!/usr/bin/env python3
"""Build the Blender extension zips of the Segment Parts add-on.

    python build_addon.py            # every platform: windows-x64, macos-arm64, macos-x64, linux-x64
    python build_addon.py --local    # only this machine's platform (tests, `make demo`)

Needs only Python 3.11+ with pip (and the network for the wheels, once): Blender's extension CLI
is used when importable (the `bpy` wheel of the developer set-up) or named by $BLENDER_EXT_CLI,
else the zips are written with zipfile in the same layout (`--builder plain` forces that).

Steps: download the pyzmq and msgpack wheels for each platform and for Python 3.11 (Blender
4.2-5.0) and 3.13 (Blender 5.1+) with `pip download --only-binary` (cached under build/wheels, so a
second run is quick) and FAIL if any platform lacks a wheel for any dependency; stage addon/ with
`_shared/` (copies of the backend's wire.py, client.py, hierarchy.py), the bundled backend
(backend/segparts + pyproject + model manifest, for "Set up backend") and the wheels; write the
manifest's `platforms` and `wheels`; build split-platform zips with Blender's own extension CLI
(blender_ext.py, shipped in the bpy wheel, runs with plain Python); validate each zip with the same
CLI and check that it holds every wheel its platform needs (the CLI silently drops missing ones).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "addon"
BACKEND = ROOT / "backend" / "segparts"
BUILD = ROOT / "build"
REQUIREMENTS = ["pyzmq==27.1.0", "msgpack==1.1.2"]
PYTHONS = ["3.11", "3.13"]
# Blender platform -> pip platform tags (pip also accepts older compatible tags for macOS)
PLATFORMS = {
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64"],
    "macos-x64": ["macosx_11_0_x86_64"],
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
}
SHARED = ["wire.py", "client.py", "hierarchy.py"]


class BuildError(Exception):
    pass


def local_platform() -> str:
    machine = platform.machine().lower()
    arch = "arm64" if machine in ("arm64", "aarch64") else "x64"
    system = {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")
    name = f"{system}-{arch}"
    if name not in PLATFORMS:
        raise BuildError(f"no wheel set configured for this platform ({name})")
    return name


def find_extension_cli() -> Path:
    """blender_ext.py from the bpy wheel (or $BLENDER_EXT_CLI)."""
    if os.environ.get("BLENDER_EXT_CLI"):
        return Path(os.environ["BLENDER_EXT_CLI"])
    roots = [Path(p) for p in sys.path if p and Path(p).is_dir()]
    for root in roots:
        hits = glob.glob(str(root / "bpy" / "*" / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"))
        if hits:
            return Path(sorted(hits)[-1])
    raise BuildError(
        "Blender's extension CLI (blender_ext.py) not found: install bpy in this Python or set BLENDER_EXT_CLI"
    )


def _project(requirement: str) -> str:
    return re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0].lower().replace("-", "_")


def _wheel_project(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("-", "_")


def download_wheels(platform_name: str, python: str, quiet: bool = True) -> list[Path]:
    """One wheel per requirement for this platform and Python; cached per (platform, Python)."""
    folder = BUILD / "wheels" / f"{platform_name}-cp{python.replace('.', '')}"
    stamp = folder / ".complete"
    wanted = "\n".join(REQUIREMENTS)
    if not (stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        abi = f"cp{python.replace('.', '')}"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(folder),
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
        ]
        for tag in PLATFORMS[platform_name]:
            cmd += ["--platform", tag]
        if quiet:
            cmd.append("--quiet")
        for req in REQUIREMENTS:
            done = subprocess.run(cmd + [req], capture_output=True, text=True)
            if done.returncode != 0:
                raise BuildError(
                    f"no {platform_name} wheel of {req} for Python {python}:\n"
                    + "\n".join(ln for ln in done.stderr.splitlines() if "WARNING" not in ln)[-800:]
                )
        stamp.write_text(wanted)
    wheels = sorted(folder.glob("*.whl"))
    for req in REQUIREMENTS:
        found = [w for w in wheels if _wheel_project(w) == _project(req)]
        if len(found) != 1:
            raise BuildError(f"{platform_name}/Python {python}: expected one wheel of {req}, found {len(found)}")
    return wheels


def stage(platforms: list[str], wheels: dict[str, list[Path]]) -> Path:
    """A clean source folder for the extension CLI: add-on, _shared copies, backend, wheels."""
    out = BUILD / "stage" / "segment_parts"
    shutil.rmtree(out, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_shared", "bundled_backend", "wheels")
    shutil.copytree(ADDON, out, ignore=ignore)
    shared = out / "_shared"
    shared.mkdir()
    (shared / "__init__.py").write_text('"""Copies of segparts/{wire,client,hierarchy}.py made by build_addon.py."""\n')
    for name in SHARED:
        shutil.copy2(BACKEND / name, shared / name)
    bundle = out / "bundled_backend"
    shutil.copytree(
        BACKEND, bundle / "backend" / "segparts", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    shutil.copy2(ROOT / "pyproject.toml", bundle / "pyproject.toml")
    shutil.copy2(ROOT / "setup.py", bundle / "setup.py")  # build hook: the manifest becomes package data
    readme = ROOT / "README.md"
    if readme.exists():
        shutil.copy2(readme, bundle / "README.md")
    else:
        (bundle / "README.md").write_text("Segment Parts backend\n")
    if (ROOT / "models" / "manifest.json").exists():
        (bundle / "models").mkdir()
        shutil.copy2(ROOT / "models" / "manifest.json", bundle / "models" / "manifest.json")
    (out / "wheels").mkdir()
    names = []
    for platform_name in platforms:
        for wheel in wheels[platform_name]:
            if not (out / "wheels" / wheel.name).exists():
                shutil.copy2(wheel, out / "wheels" / wheel.name)
                names.append(wheel.name)
    write_manifest(out / "blender_manifest.toml", platforms, sorted(names))
    return out


def backend_version() -> str:
    """The project's one version: `__version__` of backend/segparts/__init__.py."""
    found = re.search(r'^__version__ = "([^"]+)"', (BACKEND / "__init__.py").read_text(), re.M)
    if not found:
        raise BuildError("backend/segparts/__init__.py has no __version__")
    return found.group(1)


def write_manifest(path: Path, platforms: list[str], wheel_names: list[str]) -> None:
    text = path.read_text()
    version = tomllib.loads(text)["version"]  # the source manifest must parse
    if version != backend_version():  # Blender needs the literal; it must follow the backend's
        raise BuildError(
            f"addon/blender_manifest.toml version {version} != segparts.__version__ "
            f"{backend_version()}: bump both together"
        )
    lines = (
        [f"platforms = [{', '.join(repr(p).replace(chr(39), chr(34)) for p in platforms)}]", "wheels = ["]
        + [f'  "./wheels/{w}",' for w in wheel_names]
        + ["]", ""]
    )
    # top-level keys must come before the first [table]
    head, sep, tail = text.partition("\n[")
    path.write_text(head.rstrip() + "\n" + "\n".join(lines) + "\n" + (sep.lstrip("\n") + tail if sep else ""))
    tomllib.loads(path.read_text())


def run_cli(cli: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, str(cli), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"blender_ext {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def check_zip(zip_path: Path, platform_name: str, wheels: dict[str, list[Path]], cli: Path | None) -> None:
    if cli is not None:
        run_cli(cli, "validate", str(zip_path))
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    needed = {f"wheels/{w.name}" for w in wheels[platform_name]}
    missing = sorted(n for n in needed if n not in names)
    if missing:
        raise BuildError(f"{zip_path.name} lacks wheels {missing}")
    for required in [
        "__init__.py",
        "_shared/client.py",
        "_shared/wire.py",
        "_shared/hierarchy.py",
        "bundled_backend/pyproject.toml",
        "bundled_backend/setup.py",
        "bundled_backend/backend/segparts/server.py",
    ]:
        if required not in names:
            raise BuildError(f"{zip_path.name} lacks {required}")
    effective = effective_manifest(manifest)
    if effective.get("platforms") != [platform_name]:
        raise BuildError(f"{zip_path.name}: manifest platforms {effective.get('platforms')} != [{platform_name}]")
    listed = {w.removeprefix("./") for w in effective.get("wheels", [])}
    if not needed <= listed:
        raise BuildError(f"{zip_path.name}: manifest does not list wheels {sorted(needed - listed)}")


def effective_manifest(manifest: dict) -> dict:
    """What Blender reads: a split build's [build.generated] replaces platforms and wheels."""
    generated = manifest.get("build", {}).get("generated", {})
    return {**manifest, **{k: generated[k] for k in ("platforms", "wheels") if k in generated}}


def zip_name(manifest: dict, platform_name: str) -> str:
    return f"{manifest['id']}-{manifest['version']}-{platform_name.replace('-', '_')}.zip"


def build_plain(source: Path, platforms: list[str], wheels: dict[str, list[Path]], output_dir: Path) -> None:
    """What `extension build --split-platforms` makes, with zipfile only (no bpy/Blender needed):
    per platform, the staged files with only that platform's wheels and a manifest naming them."""
    manifest_text = (source / "blender_manifest.toml").read_text()
    manifest = tomllib.loads(manifest_text)
    all_wheels = {p.name for p in (source / "wheels").glob("*.whl")}
    for platform_name in platforms:
        mine = sorted(w.name for w in wheels[platform_name])
        head, _, _ = manifest_text.partition("\nplatforms = [")
        tail = (
            manifest_text[manifest_text.index("\n[", len(head) + 1) :]
            if "\n[" in manifest_text[len(head) + 1 :]
            else ""
        )
        text = (
            head.rstrip()
            + f'\nplatforms = ["{platform_name}"]\nwheels = [\n'
            + "".join(f'  "./wheels/{w}",\n' for w in mine)
            + "]\n"
            + tail
        )
        tomllib.loads(text)
        with zipfile.ZipFile(output_dir / zip_name(manifest, platform_name), "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(source.rglob("*")):
                rel = path.relative_to(source).as_posix()
                if path.is_dir() or "__pycache__" in rel or rel.endswith(".pyc"):
                    continue
                if rel.startswith("wheels/") and path.name in all_wheels and path.name not in mine:
                    continue
                if rel == "blender_manifest.toml":
                    zf.writestr(rel, text)
                else:
                    zf.write(path, rel)


def build(platforms: list[str], output_dir: Path, builder: str = "auto") -> list[Path]:
    """builder: "blender" (Blender's extension CLI from the bpy wheel or $BLENDER_EXT_CLI), "plain"
    (zipfile only: works from a fresh clone with plain Python 3.11+ and pip), "auto" (Blender's
    when it is there)."""
    cli = None
    if builder in ("auto", "blender"):
        try:
            cli = find_extension_cli()
        except BuildError:
            if builder == "blender":
                raise
    wheels = {}
    for platform_name in platforms:
        wheels[platform_name] = [w for py in PYTHONS for w in download_wheels(platform_name, py)]
    source = stage(platforms, wheels)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = tomllib.loads((source / "blender_manifest.toml").read_text())
    for old in output_dir.glob(f"{manifest['id']}-{manifest['version']}*.zip"):
        old.unlink()
    if cli is not None:
        run_cli(cli, "build", "--source-dir", str(source), "--output-dir", str(output_dir), "--split-platforms")
    else:
        build_plain(source, platforms, wheels, output_dir)
    zips = []
    for platform_name in platforms:
        zip_path = output_dir / zip_name(manifest, platform_name)
        if not zip_path.exists():
            raise BuildError(f"the extension CLI made no zip for {platform_name} ({zip_path.name})")
        check_zip(zip_path, platform_name, wheels, cli)
        zips.append(zip_path)
    return zips


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--local", action="store_true", help="build only this machine's platform")
    ap.add_argument("--platform", action="append", choices=sorted(PLATFORMS), help="build only these platforms")
    ap.add_argument("--output-dir", type=Path, default=ROOT / "dist")
    ap.add_argument(
        "--builder",
        choices=("auto", "blender", "plain"),
        default="auto",
        help="zip with Blender's extension CLI (needs bpy or $BLENDER_EXT_CLI), with plain zipfile, "
        "or Blender's when available (default)",
    )
    args = ap.parse_args(argv)
    platforms = [local_platform()] if args.local else (args.platform or list(PLATFORMS))
    try:
        zips = build(platforms, args.output_dir, args.builder)
    except BuildError as exc:
        print(f"build_addon: error: {exc}", file=sys.stderr)
        return 1
    for z in zips:
        print(f"{z}  ({z.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
