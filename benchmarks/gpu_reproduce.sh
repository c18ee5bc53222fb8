#!/usr/bin/env bash
# Reproduce issue 7's GPU measurements (docs/benchmarks/gpu.md) with one command.
#
#   ../shared/gpu/stage.sh .gpu --data          # on the dev machine, once: Ultralytics wheels + OPIXray dev set
#   bash benchmarks/gpu_reproduce.sh MODE [OUT]   # on the GPU machine, from the repo root; MODE is one of:
#
# profile:  plain Ultralytics vs the recipe's pipeline, each alone, 3 epochs (about 3.5 min on an H100)
# main:     run C, ONE run of yolov8m from scratch alone, seed 0, 8 min of training (about 8.5 min)
# recipe:   the shipped recipe (examples/jobs/xray-fast-gpu.yaml) as ONE run alone: yolov8s at imgsz 640,
#           save_every 10, 4.2 min of training (about 5 min); the same arguments as run H (half-time)
# half-time: run H as it ran (gpu_half_time.yaml, job recipe-s-4min): the recipe alone, 4.2 min (about 5 min)
# recipe-8min: run F, the recipe as it was before run H: the same, with 8 min of training (about 8.5 min)
# ablation: quarter turns, threat projection (alone and together) and threat-free bags, 5 yolov8s jobs
#           sharing the GPU for 7.2 min of training each (about 8.5 min); not part of `all`
# pair:     the recipe vs the recipe with all three X-ray augmentations, 2 yolov8s jobs sharing the GPU for
#           7.5 min each (about 8 min); run D; keeps the best.pt of the higher fitness
# imgsz:    the recipe at imgsz 416 (run D's pair-s-recipe again) vs 640, 2 yolov8s jobs sharing the GPU for
#           7.5 min each (about 8 min); run E, 640 won
# pair-640: as pair, at imgsz 640: the recipe (run E's 640 job again) vs the recipe with the X-ray
#           augmentations (about 8 min); not run yet
# capacity: yolov8m at 640 vs yolov8s at 800, 2 jobs sharing the GPU for 7.5 min each (about 8.5 min; needs an
#           H200); run G, neither beat yolov8s at 640
# save-every: what writing last.pt every epoch costs, yolov8s alone, 4 short runs (about 3.2 min)
# loader:   does the loader keep up with the X-ray augmentations: 3 yolov8s jobs alone, 5 epochs each (about 1 min)
# loader-640: throughput at imgsz 640: yolov8s with and without the X-ray augmentations, yolov8n, yolov8m,
#           each alone, 4 epochs (about 2.5 min)
# compile:  does torch.compile speed up the recipe at 640: recipe-s as it is and compiled, each alone, 8 epochs
#           (about 3.3 min); run F's session: it did not (same loop speed, +98 s first epoch)
# recipe-compile: as recipe, with torch.compile (about 6.5 min); for when `compile` shows it pays; not run
# all:     both, one after the other (default)
# Results (summary.json, table.md, logs.tar.gz, curves/, best.pt.part* for main, recipe and the pairs) go to OUT
# (default $OUT, else ./gpu-results/<what>). Rejoin the weights with: cat best.pt.part* > best.pt
set -euo pipefail
what="${1:-all}"
out="${2:-${OUT:-gpu-results}}"
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
if [[ -f .gpu/env.sh ]]; then
    # shellcheck disable=SC1091
    source .gpu/env.sh
fi
data="${XRAYDET_GPU_DATA:-.gpu/data/opixray/data.yaml}"
[[ -f "$data" ]] || { echo "no data set at $data: run ../shared/gpu/stage.sh .gpu --data first, or set XRAYDET_GPU_DATA" >&2; exit 2; }

run() {  # run JOBS_YAML OUT_DIR [--only NAME]
    python3 benchmarks/gpu_recipe.py "$1" --data "$data" --out "$2" "${@:3}"
}
case "$what" in
    profile) run benchmarks/gpu_throughput.yaml "$out" ;;
    main) run benchmarks/gpu_main.yaml "$out" --only main-m-b128 ;;
    recipe) run benchmarks/gpu_main.yaml "$out" --only recipe-s ;;
    recipe-8min) run benchmarks/gpu_main.yaml "$out" --only recipe-s-8min ;;
    recipe-compile) run benchmarks/gpu_main.yaml "$out" --only recipe-s-compile ;;
    compile) run benchmarks/gpu_compile.yaml "$out" ;;
    ablation) run benchmarks/gpu_ablation.yaml "$out" ;;
    pair) run benchmarks/gpu_ablation_pair.yaml "$out" ;;
    imgsz) run benchmarks/gpu_imgsz_pair.yaml "$out" ;;
    pair-640) run benchmarks/gpu_xray_pair_640.yaml "$out" ;;
    capacity) run benchmarks/gpu_capacity_pair_640.yaml "$out" ;;
    half-time) run benchmarks/gpu_half_time.yaml "$out" ;;
    save-every) run benchmarks/gpu_save_every.yaml "$out" ;;
    loader) run benchmarks/gpu_loader.yaml "$out" ;;
    loader-640) run benchmarks/gpu_loader_640.yaml "$out" ;;
    all)
        run benchmarks/gpu_throughput.yaml "$out/profile"
        run benchmarks/gpu_main.yaml "$out/main" --only main-m-b128
        ;;
    *) echo "usage: $0 [profile|main|recipe|recipe-8min|half-time|ablation|pair|imgsz|save-every|pair-640|capacity|loader|loader-640|compile|recipe-compile|all] [OUT]" >&2; exit 2 ;;
esac
