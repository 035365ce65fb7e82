"""The engines as the backend describes them in `hello` (no bpy): display names, whether clicks
are prompts the backend answers, whether they render the mesh, whether every scale is its own
result, which checkpoints they need; and whether the backend and the add-on speak the same protocol
and version. Nothing here knows an engine by name: the backend says what each one is."""

from __future__ import annotations

DEFAULT_ENGINE = "geometric"  # the wire's default engine (`segment` without `engine`): listed before hello
_last_known: dict[str, dict] = {}  # the latest hello's engines: the list stays while the backend restarts


def last_known() -> dict[str, dict]:
    """The engines of the latest hello (kept while the backend is stopped or restarting)."""
    return dict(_last_known)


def _info(status: dict, name: str) -> dict:
    return (status or _last_known).get(name) or {}


def label(status: dict, name: str) -> str:
    return str(_info(status, name).get("label") or name)


def click_prompts(status: dict, name: str) -> bool:
    """Clicks are prompts the engine answers (a new part per prompt), not cuts of the part tree."""
    return bool(_info(status, name).get("click_prompts"))


def renders(status: dict, name: str) -> bool:
    """The engine renders the mesh: send its shading normals too."""
    return bool(_info(status, name).get("renders"))


def scales_on_backend(status: dict, name: str) -> bool:
    """Every scale is its own result: the slider asks the backend instead of cutting the tree."""
    return bool(_info(status, name).get("scales_on_backend"))


def models(status: dict, name: str) -> list[str]:
    """The checkpoints the engine loads with its default options."""
    return [str(m) for m in _info(status, name).get("models") or []]


def enum_items(status: dict) -> list[tuple]:
    """(identifier, label, description, icon, number) for the engine menu, in the backend's order;
    before any hello, the last backend's engines (or the default engine alone)."""
    if status:
        _last_known.clear()
        _last_known.update(status)
    known = status or _last_known or {DEFAULT_ENGINE: {}}
    items = []
    for i, name in enumerate(known):
        info = status.get(name) if status else None
        if info is None:
            desc, icon = "backend not connected", "DOT"
        elif info.get("available"):
            desc, icon = "available", "CHECKMARK"
        else:
            desc, icon = "unavailable: " + str(info.get("message", "")), "ERROR"
        items.append((name, label(known, name), desc, icon, i))
    return items


def compatibility(hello: dict, protocol: int, version: str) -> tuple[bool, str]:
    """(whether the add-on can work with this backend, what to tell the user: "" when all agree).
    Another protocol cannot work; another version of the same protocol works but may lack or
    differ in features, so the panel says so."""
    theirs_protocol, theirs_version = hello.get("protocol"), str(hello.get("version", "?"))
    if theirs_protocol != protocol:
        return False, (
            f"Backend {theirs_version} speaks protocol {theirs_protocol}, this add-on {version} speaks "
            f"{protocol}: install the same version of both (Set up Backend installs the bundled one)"
        )
    if theirs_version != version:
        return True, (
            f"Backend {theirs_version} differs from the add-on {version} (same protocol {protocol}): "
            f"update one of them if something misbehaves"
        )
    return True, ""
