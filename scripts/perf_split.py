#!/usr/bin/env python3
"""Splits the samples of `perf script -F comm,tid,ip,sym` (call graphs) of a
gateway by where the time goes: the AWS SDK call, the gRPC transport, the
gateway's own batch path, the lane and call tasks. A sample counts once, in
the first category (in this order) one of its frames matches. With a
second argument, the frames under that one, by inclusive share."""
import collections
import sys

CATEGORIES = [
    ("AWS SDK call (serialize, sign, orchestrate)", "aws_smithy_runtime::client::orchestrator"),
    ("AWS SDK HTTP/1.1 connection", "hyper::client::conn::http1"),
    ("gateway: unary handler and batch path", "PartnerEvents>::put_partner_events::{{closure}}"),
    ("gateway: stream batches", "api::stream::"),
    ("gateway: batch path (other callers)", "BatchProcessor::answer"),
    ("gateway: coalescing lane", "run_lane"),
    ("gateway: call task (answering entries)", "pipeline::call::"),
    ("gRPC: request task (tonic, metrics layer, decode/encode)", "H2Stream"),
    ("gRPC: HTTP/2 connection task", "serve_connection"),
]


def samples(path):
    cur = None
    for line in open(path, errors="replace"):
        if not line.strip():
            if cur is not None:
                yield cur
            cur = None
        elif not line[0].isspace():
            cur = []
        elif cur is not None:
            parts = line.strip().split(None, 1)
            cur.append(parts[1] if len(parts) > 1 else "?")
    if cur:
        yield cur


def main():
    all_samples = list(samples(sys.argv[1]))
    n = len(all_samples) or 1
    if len(sys.argv) > 2:
        anchor, counts, hits = sys.argv[2], collections.Counter(), 0
        for s in all_samples:
            idx = [i for i, f in enumerate(s) if anchor in f]
            if idx:
                hits += 1
                counts.update(set(s[: idx[-1]]))
        print(f"{100 * hits / n:6.2f}% {anchor}")
        for frame, c in counts.most_common(40):
            print(f"{100 * c / n:6.2f}%   {frame[:160]}")
        return
    counts = collections.Counter()
    for s in all_samples:
        for name, marker in CATEGORIES:
            if any(marker in f for f in s):
                counts[name] += 1
                break
        else:
            counts["other (runtime, kernel, unattributed)"] += 1
    print(f"{len(all_samples)} samples")
    for name, c in counts.most_common():
        print(f"{100 * c / n:6.2f}% {name}")


if __name__ == "__main__":
    main()
