#!/usr/bin/env bash
# Before/after of `train-quick`, interleaved: bench/train-ab.sh BASE_REV [ROUNDS] [train-quick options...]
# Builds BASE_REV's bench (git archive into a temporary folder) and this tree's, then runs train-quick ROUNDS times
# (default 5) alternating base and this tree with the same options, and prints, per suite (nelbo_ce, adamw,
# train_step) and shape, the median of each side and base/this (> 1 = this tree is faster), with the machine's load.
# Example (the issue-15 small model): bench/train-ab.sh main 5 --model custom --width 128 --layers 2 --heads 2 --vocab 50258 --L 256 --Lp 4 --batch 4
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base="${1:?usage: bench/train-ab.sh BASE_REV [ROUNDS] [train-quick options...]}"; shift
rounds=5
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then rounds="$1"; shift; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$root" archive "$base" | tar -x -C "$work"
echo "building $base ($(git -C "$root" rev-parse --short "$base")) and this tree ($(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD || echo '+changes'))"
dotnet build "$work/bench" -c Release -nologo -v q -clp:ErrorsOnly
dotnet build "$root/bench" -c Release -nologo -v q -clp:ErrorsOnly
for ((i = 1; i <= rounds; i++)); do
    for side in base this; do
        dir="$root"; [[ $side == base ]] && dir="$work"
        echo "round $i/$rounds: $side"
        dotnet "$dir/bench/bin/Release/net10.0/FastBlockDiff.Bench.dll" train-quick "$@" --out "$work/$side-$i.json" | sed 's/^/  /'
    done
done
echo "load: $(uptime)"
/usr/bin/python3 - "$work" "$rounds" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
times = {}
for side in ("base", "this"):
    for i in range(1, rounds + 1):
        for r in json.load(open(f"{work}/{side}-{i}.json"))["results"]:
            if r["suite"] == "train_step_split": continue
            key = (r["suite"], json.dumps(r["shape"], sort_keys=True))
            times.setdefault(key, {"base": [], "this": []})[side].append(r["ms"])
print(f"{'suite':<12} {'base ms':>10} {'this ms':>10} {'base/this':>9}  shape")
for (suite, shape), t in times.items():
    if not t["base"] or not t["this"]: continue
    b, n = statistics.median(t["base"]), statistics.median(t["this"])
    print(f"{suite:<12} {b:>10.2f} {n:>10.2f} {b / n:>9.2f}  {shape}")
EOF
