"""Summarize a py-spy raw profile (BENCH_PROFILE=1): self and inclusive time per frame.

python bench/profile_report.py bench/results/logs/profile-worker-ses30.txt [N]
"""

from __future__ import annotations

import sys
from collections import Counter


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    n = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            c = int(count)
            n += c
            frames = stack.split(";")
            own[frames[-1]] += c
            for frame in set(frames):
                total[frame] += c
    print(f"samples: {n}\n--- self")
    for frame, c in own.most_common(top):
        print(f"{c * 100 / n:5.1f}% {frame[:150]}")
    print("--- inclusive")
    for frame, c in total.most_common(top + 20):
        print(f"{c * 100 / n:5.1f}% {frame[:150]}")


if __name__ == "__main__":
    main()
