"""Tables of interleaved bench runs: `python3 bench/lib/table.py RAW A B...`.

RAW holds "WHO WORKLOAD NAME N SECONDS PER_OP_US" lines (the harness's
WORKLOAD lines with the contender's name in front). Prints one markdown
row per workload: each contender's median (min-max), then each one's
ratio of medians against the first.
"""
import collections
import statistics
import sys

# name -> (metric, value from (seconds_total, per_op_us)), as the harness's report.py
METRICS = {
    "launch": ("ms / launch", lambda s, u: u / 1e3),
    "roundtrip": ("us / command", lambda s, u: u),
    "events": ("us / event", lambda s, u: u),
    "parallel": ("s total", lambda s, u: s),
    "console_boot": ("s to marker", lambda s, u: s),
    "console_stream": ("ms / MiB read", lambda s, u: u * 1024 / 1e3),
    "command_loop": ("us / command", lambda s, u: u),
}


def fmt(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def cell(v):
    return f"{fmt(statistics.median(v))} ({fmt(min(v))}-{fmt(max(v))})"


def main(raw, who):
    vals = collections.defaultdict(list)
    for line in open(raw):
        name_of, _, name, _n, secs, per_op = line.split()[:6]
        if name in METRICS:
            vals[(name_of, name)].append(METRICS[name][1](float(secs), float(per_op)))
    ratios = [f"{w} / {who[0]}" for w in who[1:]]
    print("| workload | metric | " + " | ".join(who + ratios) + " |")
    print("|---" * (2 + len(who) + len(ratios)) + "|")
    for name, (metric, _) in METRICS.items():
        cols = [vals.get((w, name), []) for w in who]
        if all(cols):
            base = statistics.median(cols[0])
            row = [cell(c) for c in cols]
            row += [f"{statistics.median(c) / base:.2f}x" for c in cols[1:]]
            print(f"| {name} | {metric} | " + " | ".join(row) + " |")
    print(f"\nmedian (min-max) of interleaved runs; raw results: {raw}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
