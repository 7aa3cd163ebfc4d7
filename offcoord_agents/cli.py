"""The ``offcoord-agents`` command.

    offcoord-agents list
    offcoord-agents train ALGO DATASET [--seed S] [--steps N] [--out DIR] [--set key=value ...] [--no-resume]
    offcoord-agents evaluate POLICY_FILE ENV_ID [--episodes 10] [--seed 0] [--stochastic]
    offcoord-agents reproduce TABLE [--tier smoke|quick|paper] [--backend local|ray] [--address ADDR]
    offcoord-agents render RUN_DIR_OR_POLICY_FILE --out FILE.gif [--env ENV_ID] [--episodes N]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys

import offcoord

import offcoord_agents
from offcoord_agents.registry import ALGORITHMS, algorithm_class
from offcoord_agents.reproduce import STATUS_SECONDS


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set takes key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def cmd_list(args) -> int:
    for name in sorted(ALGORITHMS):
        cls = algorithm_class(name)
        kind = "centralized" if cls.centralized else "decentralized"
        fields = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        summary = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<9} {kind:<14} {summary}")
        if args.verbose:
            print("          " + json.dumps(fields, default=str))
    return 0


def cmd_train(args) -> int:
    config = _parse_set(args.set)
    policy = offcoord_agents.train(args.algorithm, args.dataset, seed=args.seed, steps=args.steps, config=config,
                                   out=args.out, resume=not args.no_resume, progress=not args.quiet,
                                   device=args.device, threads=args.threads)
    final = policy.meta["evals"][-1] if policy.meta.get("evals") else {}
    print(json.dumps({"algorithm": args.algorithm, "dataset": args.dataset, "seed": args.seed, "final": final}))
    return 0


def cmd_evaluate(args) -> int:
    policy = offcoord_agents.load_policy(args.policy, stochastic=args.stochastic, seed=args.seed)
    result = offcoord.evaluate(policy, args.env_id, episodes=args.episodes, seed=args.seed)
    print(result.summary())
    return 0


def cmd_reproduce(args) -> int:
    from pathlib import Path

    from offcoord_agents.reproduce import plan, run_all, summarize

    def names(text):
        if text is None:
            return None
        chosen = [x.strip() for x in text.split(",") if x.strip()]
        if not chosen:
            raise ValueError(f"--datasets/--algorithms got {text!r}: give comma-separated names, or leave it out for all")
        return chosen

    if not args.status_every > 0:
        raise ValueError(f"--status-every got {args.status_every}: give a number of seconds above 0")
    runs = plan(args.table, args.tier, datasets=names(args.datasets), algorithms=names(args.algorithms))
    out = Path(args.out)
    print(f"{args.table} table, {args.tier} tier: {len(runs)} runs into {out / args.table} ({args.backend} backend)")
    run_all(runs, out, backend=args.backend, workers=args.workers, address=args.address, status_every=args.status_every)
    print(summarize(args.table, plan(args.table, args.tier), out, args.tier))  # the whole table: cells not run show "–"
    return 0


def cmd_render(args) -> int:
    from pathlib import Path

    from offcoord.render import render_from_args

    path = Path(args.policy)
    if path.is_dir():
        path = path / "policy.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no policy file (give a run directory holding policy.pt, or the file)")
    policy = offcoord_agents.load_policy(path, stochastic=args.stochastic, seed=args.seed)
    env_id = args.env or getattr(getattr(policy, "spec", None), "env_id", None)
    if not env_id:
        raise ValueError(f"{path} does not say which environment it was trained on; pass --env ENV_ID")
    if not args.out:
        raise ValueError("--out FILE.gif (or .mp4) is required")
    try:
        out = render_from_args(env_id, policy, args)
    except ImportError as e:
        raise RuntimeError(str(e)) from None
    print(f"{env_id} ({path}): {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="offcoord-agents", description="Train and evaluate offline multi-agent RL agents on offcoord datasets.")
    parser.add_argument("--version", action="version", version=f"offcoord-agents {offcoord_agents.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the algorithms")
    p.add_argument("--verbose", action="store_true", help="also print each algorithm's default config")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("train", help="train an algorithm on a dataset")
    p.add_argument("algorithm", help=f"one of {sorted(ALGORITHMS)}")
    p.add_argument("dataset", help="a dataset id (offcoord list)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="gradient steps (default: the algorithm's)")
    p.add_argument("--out", default=None, help="run directory: metrics, checkpoints, policy.pt, results.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("reproduce", help="run a paper table (algorithms x datasets x seeds) and print it beside the paper's")
    p.add_argument("table", help="coordination, reacher or ant")
    p.add_argument("--tier", default="quick", help="smoke (minutes, CI), quick (hours on 2 cores), paper (the paper's budgets)")
    p.add_argument("--out", default="runs/reproduce", help="output directory (finished runs there are skipped)")
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--workers", type=int, default=None, help="local backend: processes (default: one per core)")
    p.add_argument("--address", default=None, help="ray backend: address of an existing cluster (default: start a local Ray)")
    p.add_argument("--datasets", default=None, metavar="A,B", help="run only these rows of the table (default: all)")
    p.add_argument("--algorithms", default=None, metavar="A,B", help="run only these columns of the table (default: all)")
    p.add_argument("--status-every", type=float, default=STATUS_SECONDS, metavar="SECONDS",
                   help=f"while no run finishes, say every SECONDS where the unfinished runs are (default {STATUS_SECONDS:.0f})")
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("evaluate", help="evaluate a saved policy with decentralized execution")
    p.add_argument("policy", help="a policy.pt written by training")
    p.add_argument("env_id")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic mean/mode")
    p.set_defaults(func=cmd_evaluate)
    from offcoord.render import add_render_arguments

    p = sub.add_parser("render", help="write a GIF/MP4 of a saved agent on its task (decentralized execution)")
    p.add_argument("policy", help="a run directory (holding policy.pt) or a policy.pt file")
    p.add_argument("--env", default=None, help="environment id (default: the one the policy was trained on)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic mean/mode")
    add_render_arguments(p)
    p.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from offcoord_agents.core import pick_threads

    # Small networks, one sample at a time when evaluating or rendering: a second torch thread only
    # spins, and on a busy machine it slowed a 100-episode evaluation from 14 s to minutes.
    # (train and reproduce runs set their own, --threads.)
    torch.set_num_threads(pick_threads())
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"offcoord-agents: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
