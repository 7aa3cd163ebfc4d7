"""Memory: peak RSS of sampling from the largest ant dataset, and of MOMA-PPO training on ant.

(a) ``offcoord.load_dataset("ant-mixed-po")`` (4M transitions) when it is built in the cache,
else its size variant ``ant-mixed-po@SIZE`` (``--size``; built on first use), then 10,000
``ds.sample(256)`` batches. The columns are memory-mapped, so the process's *anonymous* memory
(its own copies) should grow by about one batch, not by the dataset; the pages it reads are the
page cache (file-backed, shared, reclaimable), reported apart. Target: anonymous growth < 64 MB,
whatever the dataset's size.

(b) MOMA-PPO trained for a few iterations on ``ant-expert-po@SIZE`` with the benchmark's budget
(``--moma-*``). Target: peak RSS < 2 GiB (four runs fit on an 8 GB machine).

Each measurement runs in a fresh Python process; the baseline (interpreter + imports, measured in
that process before the work) is subtracted. RSS is read from ``/proc/self/status`` (VmHWM for the
peak, RssAnon sampled during the loop), else from ``resource.getrusage``.

    python -m benchmarks.bench_memory [--size 200000] [--batches 10000] [--moma-steps 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

ANON_TARGET_MB = 64
MOMA_TARGET_MB = 2048

_PROBE = """
import os, resource, json
def status():
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[k] = int(v.split()[0]) / 1024  # MB
    except OSError:
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out
"""

_SAMPLE_SCRIPT = _PROBE + """
import sys, numpy as np, offcoord
dataset_id, size, batches, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
size = None if size == "full" else int(size)
offcoord.make("ant-po")  # imports and the environment the views come from: part of the baseline
base = status()
ds = offcoord.load_dataset(dataset_id, size=size, auto_build=False)
loaded = status()
rng = np.random.default_rng(0)
peak_anon = 0.0
for i in range(batches):
    b = ds.sample(batch_size, rng)
    if i % 100 == 0:
        peak_anon = max(peak_anon, status().get("RssAnon", 0.0))
end = status()
arrays = [b.rewards, b.terminations, b.truncations, b.states, b.next_states, b.joint_actions, b.indices,
          *b.observations.values(), *b.next_observations.values(), *b.actions.values()]
print(json.dumps({"base": base, "loaded": loaded, "end": end, "peak_anon": max(peak_anon, end.get("RssAnon", 0.0)),
                  "batch_bytes": int(sum(np.asarray(a).nbytes for a in arrays)),
                  "column_bytes": int(sum(c["bytes"] for c in ds.manifest["columns"].values())),
                  "transitions": len(ds)}))
"""

_MOMA_SCRIPT = _PROBE + """
import sys, time, torch, offcoord, offcoord_agents
dataset_id, size, config = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
offcoord.make("ant-po")
base = status()
t0 = time.perf_counter()
offcoord_agents.train("momappo", offcoord.load_dataset(dataset_id, size=size, auto_build=False), config=config, progress=False)
print(json.dumps({"base": base, "end": status(), "seconds": time.perf_counter() - t0}))
"""


def _child(script: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"measurement process failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _full_is_built(dataset_id: str) -> bool:
    from offcoord.data.generate import store_path
    from offcoord.registry import dataset_card

    return (store_path(dataset_card(dataset_id)) / "manifest.json").exists()


def sampling_memory(size: int, batches: int, batch_size: int = 256, dataset_id: str = "ant-mixed-po") -> dict:
    import offcoord

    if _full_is_built(dataset_id):
        size_arg = "full"
    else:  # never build the 4M-transition dataset here: a size variant, built on first use
        offcoord.build(dataset_id, size=size, progress=False)
        size_arg = size
    r = _child(_SAMPLE_SCRIPT, dataset_id, size_arg, batches, batch_size)
    base = r["base"]
    return {
        "dataset": dataset_id if size_arg == "full" else f"{dataset_id}@{size}",
        "transitions": r["transitions"],
        "column_mb": r["column_bytes"] / 2**20,
        "batch_mb": r["batch_bytes"] / 2**20,
        "base_mb": base.get("VmRSS", base["VmHWM"]),
        "peak_growth_mb": r["end"]["VmHWM"] - base["VmHWM"],
        "anon_growth_mb": r["peak_anon"] - base.get("RssAnon", 0.0),
        "file_mb": r["end"].get("RssFile", float("nan")) - base.get("RssFile", 0.0),
    }


def moma_memory(size: int, config: dict, dataset_id: str = "ant-expert-po") -> dict:
    import offcoord

    offcoord.build(dataset_id, size=size, progress=False)
    r = _child(_MOMA_SCRIPT, dataset_id, size, json.dumps(config))
    return {"dataset": f"{dataset_id}@{size}", "base_mb": r["base"]["VmHWM"], "peak_mb": r["end"]["VmHWM"],
            "growth_mb": r["end"]["VmHWM"] - r["base"]["VmHWM"], "seconds": r["seconds"]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200_000,
                        help="transitions of the ant-mixed-po variant used when the full dataset is not built")
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--moma-size", type=int, default=20_000, help="transitions of the ant-expert-po variant for MOMA-PPO")
    parser.add_argument("--moma-steps", type=int, default=3, help="MOMA-PPO iterations")
    parser.add_argument("--moma-rollouts", type=int, default=1024)
    parser.add_argument("--moma-wm-steps", type=int, default=500, help="world-model gradient steps")
    args = parser.parse_args(argv)

    s = sampling_memory(args.size, args.batches, args.batch_size)
    print(f"{s['dataset']}: {s['transitions']:,} transitions, columns {s['column_mb']:,.1f} MB, one batch of "
          f"{args.batch_size}: {s['batch_mb']:.2f} MB")
    print(f"  baseline (interpreter + imports + env): {s['base_mb']:7.1f} MB")
    print(f"  after load + {args.batches:,} batches: peak RSS +{s['peak_growth_mb']:.1f} MB, of which anonymous "
          f"+{s['anon_growth_mb']:.1f} MB (own copies) and file-backed +{s['file_mb']:.1f} MB (page cache of the columns)")
    anon_ok = s["anon_growth_mb"] < ANON_TARGET_MB
    print(f"  anonymous growth < {ANON_TARGET_MB} MB (a full copy would be {s['column_mb']:,.0f} MB): {'PASS' if anon_ok else 'FAIL'}")

    config = {"steps": args.moma_steps, "eval_every": args.moma_steps, "eval_episodes": 1, "rollouts": args.moma_rollouts,
              "horizon": 10, "wm_max_steps": args.moma_wm_steps, "wm_eval_every": max(1, args.moma_wm_steps // 2)}
    m = moma_memory(args.moma_size, config)
    moma_ok = m["peak_mb"] < MOMA_TARGET_MB
    print(f"\nMOMA-PPO on {m['dataset']} ({args.moma_steps} iterations, {args.moma_rollouts} rollouts x 10 steps, "
          f"default networks, {args.moma_wm_steps} world-model steps, {m['seconds']:.0f} s):")
    print(f"  peak RSS {m['peak_mb']:,.0f} MB (baseline {m['base_mb']:,.0f} MB, +{m['growth_mb']:,.0f} MB); "
          f"target < {MOMA_TARGET_MB} MB: {'PASS' if moma_ok else 'FAIL'}")
    return [
        {"benchmark": "memory", "what": f"sampling {args.batches:,}x{args.batch_size} from {s['dataset']}: anonymous RSS growth",
         "value": f"{s['anon_growth_mb']:.1f} MB", "target": f"< {ANON_TARGET_MB} MB (copy: {s['column_mb']:,.0f} MB)",
         "pass": anon_ok},
        {"benchmark": "memory", "what": f"MOMA-PPO on {m['dataset']}: peak RSS", "value": f"{m['peak_mb']:,.0f} MB",
         "target": f"< {MOMA_TARGET_MB} MB", "pass": moma_ok},
    ]


if __name__ == "__main__":
    main()
