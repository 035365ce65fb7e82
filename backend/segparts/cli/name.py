"""`segparts name MESH --labels L.npy`: name parts with a vision-language model you choose.

The endpoint (any OpenAI-compatible chat-completions server with image input) comes from
--url/--model/--api-key or SEGPARTS_VLM_URL / SEGPARTS_VLM_MODEL / SEGPARTS_VLM_API_KEY. With
none set, nothing is sent and the command says so. --save-images writes the exact images that
are (or, with --dry-run, would be) sent. See docs/naming.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import CliError


def register(sub):
    p = sub.add_parser("name", help="name parts with a vision-language model (OpenAI-compatible endpoint)")
    p.add_argument("mesh", help="mesh file (.obj .off .ply .stl .glb .gltf)")
    p.add_argument(
        "--labels",
        required=True,
        help="one label per face (.npy, or text one per line), as `segparts segment --out L.npy` writes",
    )
    p.add_argument("--object-name", default=None, help="what the object is (e.g. chair): given to the model")
    p.add_argument(
        "--url", default=None, help="endpoint base URL, e.g. http://localhost:11434/v1 (default: $SEGPARTS_VLM_URL)"
    )
    p.add_argument("--model", default=None, help="model name (default: $SEGPARTS_VLM_MODEL)")
    p.add_argument("--api-key", default=None, help="API key (default: $SEGPARTS_VLM_API_KEY; prefer the variable)")
    p.add_argument(
        "--up-axis",
        choices=["y", "z"],
        default=None,
        help="the file's up axis (default: Y for .glb/.gltf, Z otherwise); views are rendered upright",
    )
    p.add_argument("--views", type=int, default=3, help="highlighted views per part (1-8; default 3)")
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="requests at a time (default 1; a hosted endpoint may take more, a local one rarely gains)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=2, help="retries per part after the first try (default 2)")
    p.add_argument(
        "--cache",
        default=None,
        help="name cache file (default: $SEGPARTS_NAME_CACHE or "
        "part_names.json in the user's cache folder, ~/.cache/segparts on Linux)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the name cache")
    p.add_argument("--save-images", default=None, metavar="DIR", help="write each part's image as DIR/part_NNN.png")
    p.add_argument("--dry-run", action="store_true", help="render the images (--save-images) but send nothing")
    p.add_argument("--json", default=None, metavar="OUT", help="write the names as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import naming
    from ..mesh import MeshError
    from ..meshio import load_mesh
    from .render import _read_labels

    if not 1 <= args.views <= 8:
        raise CliError("--views must be in 1..8")
    if not 1 <= args.parallel <= naming.MAX_PARALLEL:
        raise CliError(f"--parallel must be in 1..{naming.MAX_PARALLEL}")
    try:
        endpoint = naming.resolve_endpoint(
            args.url, args.model, args.api_key, timeout_s=args.timeout, retries=args.retries
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if endpoint is None and not args.dry_run:
        raise CliError(
            f"naming is off: give --url and --model, or set {naming.ENV_URL} and {naming.ENV_MODEL} "
            f"(docs/naming.md); nothing was sent"
        )
    try:
        mesh = load_mesh(args.mesh, up_axis=args.up_axis)
    except MeshError as exc:
        raise CliError(exc.message) from None
    labels = _read_labels(args.labels, mesh)
    object_name = args.object_name or Path(args.mesh).stem
    if args.dry_run:
        return _dry_run(mesh, labels, args)
    cache = naming.NameCache(None if args.no_cache else (args.cache or naming.default_cache_path()))
    print(f"naming parts with {endpoint.describe()} (object: {object_name})", file=sys.stderr)
    results = naming.name_parts(
        mesh,
        labels,
        endpoint,
        object_name,
        cache,
        n_views=args.views,
        progress=_progress,
        save_dir=args.save_images,
        parallel=args.parallel,
    )
    print("", file=sys.stderr)
    for r in results:
        print(
            f"{r.part:4d}  {r.name}" + (" (cached)" if r.cached else "")
            if r.error is None
            else f"{r.part:4d}  -  failed: {r.error}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": endpoint.model,
                    "endpoint": endpoint.describe(),
                    "object_name": object_name,
                    "parts": [r.to_dict() for r in results],
                },
                indent=1,
            )
        )
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"{failed} of {len(results)} parts kept no name", file=sys.stderr)
    return 1 if failed == len(results) and results else 0


def _dry_run(mesh, labels, args) -> int:
    from .. import naming

    if not args.save_images:
        raise CliError("--dry-run needs --save-images DIR (it only renders what would be sent)")
    out = Path(args.save_images)
    out.mkdir(parents=True, exist_ok=True)
    parts = sorted({int(x) for x in labels[labels >= 0]})
    for sheet in naming.render_part_sheets(mesh, labels, parts, n_views=args.views):
        if sheet.png is None:
            print(f"{sheet.part:4d}  too small to be seen; would not be sent")
            continue
        path = out / f"part_{sheet.part:03d}.png"
        path.write_bytes(sheet.png)
        print(f"{sheet.part:4d}  {path} ({len(sheet.png) // 1024} KiB)")
    return 0


def _progress(fraction: float, stage: str) -> None:
    print(f"\r{stage} {fraction * 100:3.0f}%", end="", file=sys.stderr, flush=True)
