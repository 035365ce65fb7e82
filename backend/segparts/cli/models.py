"""`segparts models list | fetch NAME | verify`: the checkpoints of the learned engines."""

from __future__ import annotations

from . import CliError


def register(sub):
    p = sub.add_parser("models", help="list, download and verify model checkpoints")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ls = msub.add_parser("list", help="the manifest, and which files are present")
    ls.set_defaults(func=run_list)
    fe = msub.add_parser("fetch", help="download checkpoints (resumable, sha256-checked)")
    fe.add_argument("names", nargs="+", metavar="NAME", help="model names from `models list`, or 'all'")
    fe.add_argument("--force", action="store_true", help="download again even if present")
    fe.add_argument("--retries", type=int, default=3, help="automatic resumes after a dropped connection")
    fe.set_defaults(func=run_fetch)
    ve = msub.add_parser("verify", help="check present files against the manifest's sha256")
    ve.add_argument("names", nargs="*", metavar="NAME")
    ve.set_defaults(func=run_verify)


def _specs(names):
    from ..models import ModelError, load_manifest

    try:
        manifest = load_manifest()
    except ModelError as exc:
        raise CliError(str(exc)) from None
    if not names or names == ["all"]:
        return list(manifest.values())
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise CliError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(manifest)}")
    return [manifest[n] for n in names]


def run_list(args) -> int:
    from ..models import models_dir

    print(f"models folder: {models_dir()}  (set SEGPARTS_MODELS to change)")
    for s in _specs([]):
        state = "present" if s.path.is_file() else "missing"
        print(f"{s.name:24s} {s.size_text():>9s}  {state:8s} engines: {','.join(s.engines):18s} {s.description}")
    return 0


def run_fetch(args) -> int:
    from ..models import ModelError, fetch

    for s in _specs(args.names):
        try:
            path = fetch(s, force=args.force, retries=args.retries)
        except ModelError as exc:
            raise CliError(str(exc)) from None
        print(f"{s.name}: {path}" + ("" if s.sha256 else " (no published sha256: unverified)"))
    return 0


def run_verify(args) -> int:
    from ..models import verify

    bad = 0
    for s in _specs(args.names):
        result = verify(s)
        bad += result == "mismatch"
        print(f"{s.name:24s} {result:10s} {s.path}")
    if bad:
        raise CliError(f"{bad} checkpoint(s) do not match the manifest; fetch them again with --force")
    return 0
