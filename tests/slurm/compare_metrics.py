"""Compares the loss columns of two metrics.csv files of alice runs (helper for
tests/slurm/test_preempt.sh): every row of the reference must appear in the candidate with the
same step and bit-identical losses (CPU resume is exact). Timing columns (ms/step, samples/s,
ETA, wall time) are ignored since they differ from run to run.

usage: compare_metrics.py REFERENCE.csv CANDIDATE.csv
exit 0 when equal, 1 with the first differences printed otherwise."""
import csv
import sys

TIMING_WORDS = ("ms", "time", "sec", "eta", "samples", "throughput", "mfu", "flop", "wall", "mem")


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"compare_metrics: {path} has no rows")
    return rows


def is_compared(column):
    c = column.lower()
    return not any(word in c for word in TIMING_WORDS)


def main():
    ref, cand = load(sys.argv[1]), load(sys.argv[2])
    columns = [c for c in ref[0].keys() if is_compared(c)]
    step_col = next((c for c in columns if c.lower() == "step"), None)
    if step_col is None:
        sys.exit(f"compare_metrics: no 'step' column in {sys.argv[1]} (columns: {list(ref[0])})")
    loss_cols = [c for c in columns if "loss" in c.lower() or c.lower().startswith("l_")]
    if not loss_cols:
        sys.exit(f"compare_metrics: no loss columns in {sys.argv[1]} (columns: {list(ref[0])})")
    by_step = {}
    for row in cand:
        if row[step_col] in by_step:
            print(f"step {row[step_col]} appears twice in {sys.argv[2]} (a resumed run re-logged it)")
            return 1
        by_step[row[step_col]] = row
    bad = 0
    for row in ref:
        other = by_step.get(row[step_col])
        if other is None:
            print(f"step {row[step_col]} missing from {sys.argv[2]}")
            bad += 1
            continue
        for c in columns:
            if row[c] != other.get(c):
                print(f"step {row[step_col]} column {c}: reference {row[c]} vs {other.get(c)}")
                bad += 1
        if bad > 20:
            break
    if len(cand) != len(ref):
        print(f"{len(cand)} rows vs {len(ref)} in the reference")
        bad += 1
    print(f"compared {len(ref)} steps x {len(columns)} columns ({', '.join(columns)}): "
          f"{'equal' if not bad else f'{bad} differences'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
