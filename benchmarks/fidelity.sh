#!/usr/bin/env bash
# Reproduce the README's fidelity table: train every algorithm with the paper's defaults, plus the
# reference code's inner rate, then evaluate all with the paper protocol at 5 shots.
# About 20 minutes on 2 CPU cores (two runs at a time). Usage: bash benchmarks/fidelity.sh [OUT]
set -euo pipefail
OUT=${1:-runs/fidelity}
mkdir -p "$OUT"
train() { name=$1; shift; [ -f "$OUT/$name/checkpoint.pt" ] || maml-tui train --out "$OUT/$name" --quiet "$@"; }
train maml &
train fomaml --algo fomaml; wait
train reptile --algo reptile &
train anil --algo anil; wait
train metasgd --algo metasgd &
train pretrain --algo pretrain; wait
train scratch --algo scratch
train reptile-5steps --algo reptile --inner-steps 5 &
train maml-lr0.001 --inner-lr 0.001; wait
train maml-finn-lr0.001 --inner-lr 0.001 --init finn &
train fomaml-lr0.001 --algo fomaml --inner-lr 0.001; wait
train anil-lr0.001 --algo anil --inner-lr 0.001 &
train metasgd-lr0.001 --algo metasgd --inner-lr 0.001; wait
train maml-seed1 --seed 1 &
train maml-seed2 --seed 2; wait
runs=(maml maml-seed1 maml-seed2 fomaml reptile reptile-5steps anil metasgd pretrain scratch maml-lr0.001 maml-finn-lr0.001 fomaml-lr0.001 anil-lr0.001 metasgd-lr0.001)
maml-tui eval "${runs[@]/#/$OUT/}" --shots 5 --steps 10 --json > benchmarks/fidelity.json
python benchmarks/fidelity_table.py benchmarks/fidelity.json
