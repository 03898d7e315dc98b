"""Scale benchmark of the operator: apply N EmbeddingFinetune resources to kmock's Kubernetes emulator and time
until every resource's first Job (sdg) exists; report the operator process's peak RSS.

    python bench/operator_scale.py [--count 200]

Targets (issue 4): every first Job within 30 s, peak RSS at most 150 MB. The operator runs as a real
`eft operator --all-namespaces` subprocess; the emulator runs in this process (see tests/operator/eftop_harness.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))

from eftop_harness import Cluster, EmulatorThread, OperatorProcess, sample_resource, secrets_for  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    with EmulatorThread() as emu, tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(emu.url)
        secrets_for(cluster)
        op = OperatorProcess(emu.url, Path(tmp), extra_env={"EFT_RESYNC_SECONDS": "60"}).start()
        try:
            idle_rss = peak_rss_mb(op.proc.pid)
            names = [f"bench-{i:04d}" for i in range(args.count)]
            t0 = time.monotonic()
            for name in names:
                cluster.apply(sample_resource(name))
            applied = time.monotonic() - t0
            want = set(names)
            while True:
                jobs = cluster.list("jobs", "default")
                have = {j["metadata"]["labels"].get("finetune.embeddings.io/resource") for j in jobs}
                if want <= have:
                    break
                if time.monotonic() - t0 > args.timeout:
                    raise SystemExit(f"timeout: {len(want & have)}/{len(want)} first Jobs after {args.timeout}s")
                time.sleep(0.2)
            elapsed = time.monotonic() - t0
            # Let the status writes and Events settle before reading the peak.
            time.sleep(3)
            rss = peak_rss_mb(op.proc.pid)
            result = {"resources": args.count, "apply_seconds": round(applied, 2),
                      "all_first_jobs_seconds": round(elapsed, 2), "operator_peak_rss_mb": round(rss, 1),
                      "operator_idle_rss_mb": round(idle_rss, 1), "jobs": len(jobs),
                      "targets": {"all_first_jobs_seconds": 30, "operator_peak_rss_mb": 150}}
            print(f"resources applied:            {args.count} (in {applied:.2f} s)")
            print(f"time until every first Job:   {elapsed:.2f} s   (target <= 30 s)")
            print(f"operator peak RSS:            {rss:.1f} MB  (target <= 150 MB; {idle_rss:.1f} MB at start)")
            print(json.dumps(result))
            ok = elapsed <= 30 and rss <= 150
            sys.exit(0 if ok else 1)
        finally:
            op.stop()


if __name__ == "__main__":
    main()
