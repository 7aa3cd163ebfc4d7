"""The ``offcoord`` command: list, inspect, build, verify and export datasets.

    offcoord list                         every environment and dataset id
    offcoord info ID                      a dataset's card, cache state, sizes and scores
    offcoord generate ID [--force]        build a dataset from its card (ID may be "all")
    offcoord verify ID                    re-hash a cached dataset against its manifest
    offcoord export-minari ID [--force]   write a dataset as a local Minari dataset
    offcoord render ENV_ID --policy NAME --out FILE.gif   a video of a scripted/behavior/random team
"""

from __future__ import annotations

import argparse
import json
import sys

import offcoord
from offcoord.data import build, load_dataset, verify_dataset
from offcoord.data.generate import store_path
from offcoord.data.store import read_manifest
from offcoord.errors import DatasetCorruptedError, DatasetVerificationError
from offcoord.fileio import CorruptedFileError
from offcoord.registry import dataset_card, list_datasets, list_envs


def _ids(arg: str) -> list[str]:
    return list_datasets() if arg == "all" else [arg]


def cmd_list(args) -> int:
    print("environments:")
    for env_id in list_envs():
        print(f"  {env_id}")
    print("datasets:")
    for ds_id in list_datasets():
        card = dataset_card(ds_id)
        cached = "cached" if (store_path(card) / "manifest.json").exists() else "not built"
        print(f"  {ds_id:<36} {card.transitions:>9,} transitions  [{cached}]")
    return 0


def cmd_info(args) -> int:
    from offcoord.data import _resolve  # the loader's own reading of an id, size variants ("ID@N") included

    _, card = _resolve(args.id)
    path = store_path(card)
    info = {
        "id": args.id,
        "card": str(card.path),
        "card_sha256": card.sha256,
        "stored_copy": card.id,
        "datasets": dict(card.datasets),
        "description": card.description,
        "generation": {"env": card.env, "behavior": card.behavior, "behavior_kwargs": dict(card.behavior_kwargs),
                       "transitions": card.transitions, "seed": card.seed},
        "reference_scores": {"min": card.reference_min, "max": card.reference_max},
        "expected": dict(card.expected),
        "cache": str(path),
        "cached": (path / "manifest.json").exists(),
    }
    if info["cached"]:
        manifest = read_manifest(path, card.id)
        info["bytes_on_disk"] = sum(c["bytes"] for c in manifest["columns"].values())
        info["statistics"] = manifest.get("statistics", {})
        # what, beside the card, decides the bytes on another machine (docs/datasets.md, "Across machines")
        info["built_with"] = {k: manifest.get(k) for k in ("numpy_version", "mujoco_version", "blas_core", "platform")}
        if "mean_return" in info["statistics"]:
            info["statistics"]["normalized_mean_return"] = offcoord.normalized_score(
                next(iter(card.datasets)), info["statistics"]["mean_return"]
            )
    print(json.dumps(info, indent=2))
    return 0


def cmd_generate(args) -> int:
    for ds_id in _ids(args.id):
        path = build(ds_id, force=args.force, progress=not args.quiet)
        print(f"{ds_id}: {path}")
    return 0


def cmd_verify(args) -> int:
    for ds_id in _ids(args.id):
        if args.id == "all" and not (store_path(dataset_card(ds_id)) / "manifest.json").exists():
            print(f"{ds_id}: not built")
            continue
        stats = verify_dataset(ds_id)
        print(f"{ds_id}: ok ({stats['transitions']:,} transitions, {stats['episodes']:,} episodes, mean return {stats['mean_return']:.4f})")
    return 0


def cmd_export_minari(args) -> int:
    from offcoord.data.minari_io import export_minari

    ds = load_dataset(args.id, progress=not args.quiet)
    md = export_minari(ds, minari_id=args.minari_id, overwrite=args.force, max_episodes=args.max_episodes)
    print(f"{args.id}: Minari dataset {md.spec.dataset_id} at {md.spec.data_path}")
    return 0


def cmd_render(args) -> int:
    from offcoord.render import make_policy, policy_names, render_from_args

    try:
        if args.list:
            print("\n".join(policy_names(args.env_id)))
            return 0
        if not args.out:
            raise ValueError("--out FILE.gif (or .mp4) is required")
        path = render_from_args(args.env_id, make_policy(args.env_id, args.policy, seed=args.seed), args)
    except (ValueError, ImportError, RuntimeError) as e:  # no frames, unknown policy, no Pillow, no OpenGL
        print(f"offcoord: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.env_id} ({args.policy}): {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="offcoord", description="Datasets and environments of the offline multi-agent coordination benchmark.")
    parser.add_argument("--version", action="version", version=f"offcoord {offcoord.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list environment and dataset ids").set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="show a dataset's card, cache state and statistics")
    p.add_argument("id")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("generate", help="build a dataset from its card (ID or 'all')")
    p.add_argument("id")
    p.add_argument("--force", action="store_true", help="rebuild even if cached (replaces the copy atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("verify", help="check a cached dataset's files against their checksums (ID or 'all')")
    p.add_argument("id")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("export-minari", help="write a dataset as a local Minari dataset")
    p.add_argument("id")
    p.add_argument("--minari-id", default=None, help="Minari dataset id (default offcoord/<ID>-v0)")
    p.add_argument("--force", action="store_true", help="replace an existing local Minari dataset of that id")
    p.add_argument("--max-episodes", type=int, default=None, help="export only the first N episodes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export_minari)
    from offcoord.render import add_render_arguments

    p = sub.add_parser("render", help="write a GIF/MP4 of a team on a task (an expert, a dataset's behavior, random)")
    p.add_argument("env_id", help="a MuJoCo task: reacher2-fo, reacher2-independent, reacher2-leader-only, ant-fo, ant-po")
    p.add_argument("--policy", default="expert", help="expert, expert-clockwise, expert-counterclockwise, expert-mixed "
                   "(reacher), random, or a dataset card's behavior (e.g. medium for ant-medium); --list shows them")
    p.add_argument("--list", action="store_true", help="list the policies for ENV_ID and exit")
    add_render_arguments(p)
    p.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, DatasetCorruptedError, DatasetVerificationError, CorruptedFileError) as e:  # bad input, damage, a full disk
        print(f"offcoord: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("offcoord: interrupted; nothing half-written was left in the cache", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
