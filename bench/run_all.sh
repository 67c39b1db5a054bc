#!/usr/bin/env bash
# Runs every benchmark in one go and prints the side-by-side figures (also appended to bench/out/results.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
source tools/env.sh
python -m bench.bench_render 20
python -m bench.bench_convert 20
python -m bench.bench_stats 20
python -m bench.bench_memory
python -m bench.bench_overhead 4
python -m bench.bench_train 16 5
python -m bench.bench_eval 8 8 2 50
python -m bench.bench_tiny_model 8 5 So400m/14:frozen S/32:trained Ti/28:trained mu/16:trained mu/28:frozen mu/32:trained mu/28:trained
