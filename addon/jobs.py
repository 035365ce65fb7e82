"""Multi-step requests (upload -> segment / pick) as small state machines; no bpy.

Each step is one non-blocking request on the Session; answers arrive through Session.tick().
The mesh goes over the wire once per content: we ask for the mesh id first and send the arrays
only when the backend does not hold it (e.g. after a restart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

UNKNOWN_MESH = "unknown_mesh"
CANCELLED = "cancelled"


@dataclass
class MeshArrays:
    vertices: np.ndarray  # (V,3) float64, the ORIGINAL mesh in world orientation (orientation.py)
    faces: np.ndarray  # (T,3) int32 triangles
    tri_poly: np.ndarray  # (T,) polygon of each triangle
    n_polygons: int
    topology: object = None  # partdata.Topology, for the write-back
    cues: dict = field(default_factory=dict)  # optional per-triangle `material` / `group` ids, `marked_edges`
    appearance: dict = field(default_factory=dict)  # optional colours / uv + texture (atlas.compose)

    def wire_arrays(self) -> dict:
        """What `upload_mesh` sends. Not the polygon of each triangle (`face_map`): the backend
        answers per triangle and the add-on maps labels to polygons itself (tri_poly)."""
        return {
            "vertices": np.ascontiguousarray(self.vertices, dtype="<f8"),
            "faces": np.ascontiguousarray(self.faces, dtype="<i4"),
            # as the client sends them (`cue_wire_array`): ids as int32, edge marks one byte each
            **{
                name: np.ascontiguousarray(values, dtype="|u1" if name == "marked_edges" else "<i4")
                for name, values in self.cues.items()
            },
            **{name: np.ascontiguousarray(values) for name, values in self.appearance.items()},
        }


class _Job:
    def __init__(self, session, mesh: MeshArrays | None, mesh_id: str, on_done: Callable, on_error: Callable):
        self.session, self.mesh, self.mesh_id = session, mesh, mesh_id
        self.on_done, self.on_error = on_done, on_error
        self.state = "uploading"
        self.progress, self.stage = 0.0, "uploading mesh"
        self.job_id: str | None = None
        self.cancelled = False

    @property
    def active(self) -> bool:
        return self.state in ("uploading", "queued", "running", "cancelling")

    def _submit(self) -> None:
        """Send the job's own request once the backend holds the mesh (each kind of job)."""
        raise NotImplementedError

    def _request(self, op, args, arrays, on_message) -> None:
        try:
            self.session.request(op, args, arrays, on_message)
        except RuntimeError as exc:  # the backend went away between two steps
            self._fail(str(exc))

    def start(self):
        # ask first: if the backend holds this mesh, nothing is sent
        self._request("upload_mesh", {"mesh_id": self.mesh_id}, None, self._on_check)

    def _on_check(self, msg, error):
        if self.cancelled:
            return self._finish_cancelled()
        if msg is not None and not msg.ok and (msg.error or {}).get("code") == UNKNOWN_MESH:
            assert self.mesh is not None  # jobs without arrays (ScaleJob) never upload
            self._request("upload_mesh", {}, self.mesh.wire_arrays(), self._on_uploaded)
            return
        self._on_uploaded(msg, error)

    def _on_uploaded(self, msg, error):
        if self.cancelled:
            return self._finish_cancelled()
        if error:
            return self._fail(f"Upload failed: {error}")
        if msg.result.get("mesh_id") != self.mesh_id:
            return self._fail("Upload failed: the backend computed a different mesh id")
        self.state, self.stage = "queued", "queued"
        self._submit()

    def _on_job_message(self, msg, error):
        if self.state in ("done", "error", "cancelled"):
            return  # e.g. the backend's own 'cancelled' after the user's Cancel already ended the job
        if msg is None:  # the session failed (backend died, timed out, stopped)
            return self._fail(error)
        if msg.kind == "accepted":
            self.job_id = msg.result.get("job_id")
            if self.cancelled:
                self._send_cancel()
                self._finish_cancelled()
            return
        if msg.kind == "progress":
            self.state = "running" if self.state != "cancelling" else self.state
            self.progress = float(msg.result.get("progress", self.progress))
            self.stage = str(msg.result.get("stage", self.stage))
            return
        if not msg.ok:
            if (msg.error or {}).get("code") == CANCELLED:
                return self._finish_cancelled()
            return self._fail(error)
        self.state, self.progress, self.stage = "done", 1.0, "done"
        self.on_done(self, msg)

    def cancel(self):
        """Ends the job for the user at once: the backend is told (it stops at its next check) and
        whatever it still sends for this job is ignored."""
        if not self.active:
            return
        self.cancelled = True
        if self.job_id is not None:
            self._send_cancel()
            self._finish_cancelled()
        else:  # not accepted yet: the next answer (upload or 'accepted') sends the cancel
            self.state, self.stage = "cancelling", "cancelling"

    def _send_cancel(self):
        self._request("cancel", {"job_id": self.job_id}, None, None)

    def _finish_cancelled(self):
        if self.state == "cancelled":
            return
        self.state, self.stage = "cancelled", "cancelled"
        self.on_error(self, "Cancelled")

    def _fail(self, text: str):
        if self.state in ("done", "error", "cancelled"):
            return
        self.state, self.stage = "error", text
        self.on_error(self, text)


class SegmentJob(_Job):
    def __init__(
        self,
        session,
        mesh,
        mesh_id,
        engine: str,
        on_done,
        on_error,
        options=None,
        parts: int | None = None,
        scale: float | None = None,
    ):
        super().__init__(session, mesh, mesh_id, on_done, on_error)
        self.engine, self.options, self.parts, self.scale = engine, options or {}, parts, scale

    def _submit(self):
        args = {"mesh_id": self.mesh_id, "engine": self.engine, "options": self.options}
        if self.parts is not None:
            args["parts"] = int(self.parts)
        if self.scale is not None:
            args["scale"] = float(self.scale)
        self._request("segment", args, None, self._on_job_message)


class PickJob(_Job):
    """A prompt for an engine that answers clicks itself (GeoSAM2); result: a mask per triangle."""

    def __init__(
        self, session, mesh, mesh_id, engine: str, clicks: list[dict], on_done, on_error, scale: float | None = None
    ):
        super().__init__(session, mesh, mesh_id, on_done, on_error)
        self.engine, self.clicks, self.scale = engine, clicks, scale

    def _submit(self):
        args: dict[str, object] = {"mesh_id": self.mesh_id, "engine": self.engine, "clicks": self.clicks}
        if self.scale is not None:
            args["scale"] = float(self.scale)
        self._request("pick", args, None, self._on_job_message)


class ScaleJob(_Job):
    """A new scale of a result the backend holds (`segment` with its `segmentation_id`), for
    engines whose every scale is its own result (hello: `scales_on_backend`). Nothing is uploaded:
    when the backend no longer holds the result the job fails (`no_segmentation`, `unknown_mesh`)."""

    def __init__(self, session, mesh_id: str, engine: str, segmentation_id: str, scale: float, on_done, on_error):
        super().__init__(session, None, mesh_id, on_done, on_error)
        self.engine, self.segmentation_id, self.scale = engine, segmentation_id, float(scale)
        self.stage = "re-clustering"

    def start(self):
        self.state = "queued"
        self._submit()

    def _submit(self):
        args = {
            "mesh_id": self.mesh_id,
            "engine": self.engine,
            "segmentation_id": self.segmentation_id,
            "scale": self.scale,
        }
        self._request("segment", args, None, self._on_job_message)
