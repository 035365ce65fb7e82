"""Border measures of issue 18 item 3, shared by `eval assemblies` and `eval princeton`: how much
of a segmentation's border length lies on a cue (a crease, a concave valley, a material/group
change, an edge the artist marked) and how long it is next to a reference's (the artist's or the
people's).

Only shared (welded) edges count: borders between separate pieces share no edge and are cues by
nature."""

from __future__ import annotations

import numpy as np

from ..meshgraph import build_dual_graph, weld_vertices

CREASE = np.deg2rad(30.0)  # a border edge on a crease at least this sharp is "on a cue"
VALLEY = np.deg2rad(10.0)  # or in a concave valley at least this deep
ARTIST_BORDER_FLOOR = 1e-3  # the reference's in-piece border must be this share of all edge length


def edge_graph(mesh):
    """The welded dual graph of the mesh and, per shared edge, whether it lies on a cue."""
    g = build_dual_graph(mesh.vertices, mesh.faces, weld_vertices(mesh.vertices), marked_edges=mesh.marked_edges)
    a, b = g.pairs[:, 0], g.pairs[:, 1]
    cue = (g.dihedral >= CREASE) | (g.concavity >= VALLEY)
    if g.marked is not None:
        cue |= g.marked
    for values in (mesh.material, mesh.group):
        if values is not None:
            cue |= np.asarray(values)[a] != np.asarray(values)[b]
    return g, cue


def on_cue_share(g, cue: np.ndarray, labels: np.ndarray) -> float:
    """Share of the border length of `labels` that lies on a cue (1.0 when there is none)."""
    border = labels[g.pairs[:, 0]] != labels[g.pairs[:, 1]]
    length = float(g.edge_length[border].sum())
    return float(g.edge_length[border & cue].sum() / length) if length > 0 else 1.0


def border_length(g, labels: np.ndarray) -> float:
    return float(g.edge_length[labels[g.pairs[:, 0]] != labels[g.pairs[:, 1]]].sum())


def border_figures(mesh, labels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """`on_cue`: our share on a cue; `length_ratio`: our border length over the reference's, NaN
    where the reference has (almost) none inside pieces (an artist whose parts are whole pieces)."""
    g, cue = edge_graph(mesh)
    theirs = border_length(g, reference)
    meaningful = theirs > ARTIST_BORDER_FLOOR * float(g.edge_length.sum())
    return {
        "on_cue": on_cue_share(g, cue, labels),
        "length_ratio": border_length(g, labels) / theirs if meaningful else float("nan"),
    }


def human_border_figures(mesh, labels: np.ndarray, humans: list[np.ndarray]) -> dict[str, float]:
    """As `border_figures` against several people: our share on a cue, the people's (mean), and our
    border length over each person's (mean over people who draw any border)."""
    g, cue = edge_graph(mesh)
    ours = border_length(g, labels)
    ratios = [ours / length for h in humans if (length := border_length(g, h)) > 0]
    return {
        "on_cue": on_cue_share(g, cue, labels),
        "people_on_cue": float(np.mean([on_cue_share(g, cue, h) for h in humans])),
        "length_ratio": float(np.mean(ratios)) if ratios else float("nan"),
    }
