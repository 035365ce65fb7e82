"""Naming parts with a vision-language endpoint: the add-on side, without bpy (tested outside Blender).

The backend renders each part and asks the endpoint (op `name_parts`, docs/naming.md); the
add-on decides whether an endpoint is configured at all (preferences first, then the environment
variables SEGPARTS_VLM_URL / _MODEL / _API_KEY of Blender's process) and never sends the op
otherwise, so nothing leaves the machine unless the user set it up.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np

from .jobs import _Job

ENV_URL, ENV_MODEL, ENV_API_KEY = "SEGPARTS_VLM_URL", "SEGPARTS_VLM_MODEL", "SEGPARTS_VLM_API_KEY"
# Blender's default object names say nothing about what the object is: not given to the model
_DEFAULT_NAMES = re.compile(
    r"^(cube|sphere|uv ?sphere|ico ?sphere|cylinder|cone|torus|plane|circle|grid|"
    r"monkey|suzanne|mesh|object|untitled|model|scene)?$",
    re.I,
)


@dataclass
class EndpointSettings:
    url: str
    model: str
    api_key: str = ""
    source: str = "preferences"  # or "environment"

    def problem(self) -> str | None:
        """Why this setting cannot be used, or None."""
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            return f"the endpoint URL {self.url!r} must start with http:// or https://"
        if not self.model:
            return "no model set for the naming endpoint"
        return None

    def describe(self) -> str:
        """Which model at which address will see the renders (the API key is never shown)."""
        parsed = urlparse(self.url)
        return f"{self.model or '?'} at {parsed.scheme}://{parsed.netloc}" if parsed.netloc else self.url

    def wire_args(self) -> dict:
        args = {"url": self.url, "model": self.model}
        if self.api_key:
            args["api_key"] = self.api_key
        return args


def endpoint_settings(url: str = "", model: str = "", api_key: str = "", env=None) -> EndpointSettings | None:
    """The endpoint from the preferences, else from the environment; None: naming is off."""
    env = os.environ if env is None else env
    if url.strip():
        return EndpointSettings(url.strip(), model.strip(), api_key.strip() or env.get(ENV_API_KEY, ""), "preferences")
    if env.get(ENV_URL, "").strip():
        return EndpointSettings(
            env[ENV_URL].strip(),
            (model.strip() or env.get(ENV_MODEL, "")).strip(),
            api_key.strip() or env.get(ENV_API_KEY, ""),
            "environment",
        )
    return None


def object_hint(object_name: str) -> str | None:
    """What the object is, from its Blender name: "Chair.001" -> "chair", "office_chair" ->
    "office chair"; None for default names such as "Cube"."""
    name = re.sub(r"\.\d+$", "", object_name or "")
    name = re.sub(r"[_\-]+", " ", name)
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).strip().lower()
    name = re.sub(r"\s+", " ", name)
    return None if _DEFAULT_NAMES.match(name) else name


@dataclass
class NamingOutcome:
    names: dict[int, str]  # part id -> new name
    failures: dict[int, str]  # part id -> why it kept its name

    def message(self, object_name: str, describe: str) -> str:
        text = f"{object_name}: {len(self.names)} parts named by {describe}"
        if self.failures:
            part, why = next(iter(sorted(self.failures.items())))
            text += f"; {len(self.failures)} kept their names (part {part}: {why})"
        return text


def outcome(result: dict, part_ids) -> NamingOutcome:
    """The backend's answer -> names for the parts the object still has, and the failures."""
    alive = {int(p) for p in part_ids}
    names, failures = {}, {}
    for entry in result.get("parts") or []:
        part = entry.get("part")
        if not isinstance(part, int) or part not in alive:
            continue
        name = entry.get("name")
        if isinstance(name, str) and name.strip():
            names[part] = name.strip()[:63]  # Blender names hold 63 bytes
        else:
            failures[part] = str(entry.get("error") or "no name")
    return NamingOutcome(names, failures)


def labels_digest(labels: np.ndarray) -> bytes:
    """Cheap identity of a labelling, to notice parts changing while the names are on their way."""
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(labels, dtype=np.int32).tobytes(), digest_size=16).digest()


class NameJob(_Job):
    """upload (when the backend lacks the mesh) -> name_parts with per-triangle labels."""

    def __init__(
        self,
        session,
        mesh,
        mesh_id,
        triangle_labels: np.ndarray,
        endpoint: EndpointSettings,
        object_name: str | None,
        on_done,
        on_error,
        views: int = 3,
    ):
        super().__init__(session, mesh, mesh_id, on_done, on_error)
        self.labels = np.ascontiguousarray(triangle_labels, dtype="<i4")
        self.endpoint, self.object_name, self.views = endpoint, object_name, views

    def _submit(self):
        args = {"mesh_id": self.mesh_id, "endpoint": self.endpoint.wire_args(), "views": int(self.views)}
        if self.object_name:
            args["object_name"] = self.object_name
        self._request("name_parts", args, {"labels": self.labels}, self._on_job_message)
