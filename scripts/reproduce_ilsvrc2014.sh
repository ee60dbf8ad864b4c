#!/usr/bin/env bash
# Reproduce the GoogLeNet paper's ILSVRC 2014 detection run with this project's CLIs only.
#
# Szegedy et al. 2014, "Going Deeper with Convolutions", section 8: R-CNN with GoogLeNet region
# classifiers; proposals = selective search with the superpixel size doubled + the top 200 MultiBox boxes;
# no bounding-box regression, no context model. The paper's figures (ILSVRC 2014 DET *test* set):
#
#     single model (Table 6)            38.02 % mAP
#     ensemble of 6 models (Table 5)    43.9 %  mAP   (text: "improves results from 40% to 43.9%")
#     proposal coverage (section 8)     92 % (R-CNN's) -> 93 %, with ~60 % of R-CNN's proposals
#
# The test-set labels are not public, so, as R-CNN did, we train on train (+ val1) and measure on val2
# (Girshick's split of val) with the ILSVRC devkit's rule; R-CNN found val2 a good stand-in for test.
#
# Steps (each one is skipped when its output exists, so a killed run is resumed by running this again;
# the three training steps continue a killed run with --resume from its last.pt):
#   1. splits      symlink folders for train / val1 / val2 (the CLIs read a folder of XML files)
#   2. backbone    optional: `backbone train` on ImageNet (BACKBONE=train); default: torchvision's ImageNet
#                  GoogLeNet weights (BACKBONE=imagenet)
#   3. multibox    `detect multibox train` on train (+ val1)
#   4. proposals   `detect proposals --method paper` caches (SS x2 + 200 MultiBox) for train, val1, val2,
#                  with their recall (val2's is the paper's "coverage")
#   5. rc1..rcN    `detect train` x NUM_MODELS region classifiers, seeds SEED_BASE.., sampling variations
#   6. detect      `detect run` on val2: model 1 alone and the ensemble of all N
#   7. eval        `detect eval` with the ILSVRC devkit rule (+ the devkit's blacklist) on val2
#   8. report      the paper's figures beside ours (OUT_ROOT/results.txt)
#
# Usage (every knob is an environment variable; defaults are the paper's setting where it gives one):
#     VAL1_LIST=rcnn/val1.txt VAL2_LIST=rcnn/val2.txt DATA_ROOT=/data/ILSVRC \
#         bash scripts/reproduce_ilsvrc2014.sh
#     NPROC=8 WORKERS=10 bash scripts/reproduce_ilsvrc2014.sh        # 8 GPUs (torchrun) for training/detection
#
# Inputs:
#   DATA_ROOT   the ILSVRC DET layout: Annotations/DET/{train,val}/**.xml (WordNet ids as <name>),
#               Data/DET/{train,val}/**.JPEG, ImageSets/DET/val.txt ("name index", the devkit's indices)
#   VAL1_LIST, VAL2_LIST
#               Girshick's val1/val2 split from R-CNN's release (github.com/rbgirshick/rcnn,
#               imdb/data-splits/det_lists/val1.txt and val2.txt: 10,204 + 9,917 images). Their second
#               column numbers the images within the split, not within val; this script rewrites them with
#               val.txt's indices so that the devkit's blacklist (indexed by val.txt) hits the right images.
#   TRAIN_LIST  optional subset of train (names relative to Annotations/DET/train, e.g. R-CNN's
#               "train_1k": up to 1,000 boxes per class); empty = all of train.
#   BLACKLIST   the devkit's ILSVRC2014_det_validation_blacklist.txt, used when the file exists.
#
# Cost estimate (GPU-hours on an H100, from the figures in BENCHMARKS.md; for planning, +-50 %):
#   Data (ILSVRC 2014 DET): train 456,567 images / 478,807 boxes; val 20,121 images / 55,502 boxes,
#   split by R-CNN into val1 10,204 and val2 9,917 images.
#   Training set train + val1: 456,567 + 10,204 = 466,771 images; 478,807 + ~27,750 = ~506,600 boxes.
#   Proposals per image: ~1,440 (60 % of R-CNN's ~2,400; ours: 1,604 SS x2 boxes/image measured on
#   coco128, + 200 MultiBox).
#   Positives per box (IoU >= 0.5, the box itself included): ~25 (measured, SS x2 on 48 coco128 images: 19 per
#   object covering >= 2 % of its image, 25 per object >= 10 %; ILSVRC's objects are mostly large).
#   -> positives per epoch: 506,600 x 25 = ~12.7 M regions; every positive comes with 3 background regions
#      (batches of 32 + 96), so one epoch = 4 x 12.7 M = 50.7 M crops = 396 k steps of 128.
#   -> EPOCHS=10 (`detect train`'s default; the paper gives none): 507 M crops per model, 3.04 G for 6.
#   Training throughput on a GPU was NEVER MEASURED (BENCHMARKS.md measures GPU inference only). Estimate:
#   inference, eager bf16, batch 512-1024: 17,000 crops/s per model on an H100 (32,700 compiled; training
#   runs eager); forward + backward + SGD step ~3x a forward pass -> ~5,700 crops/s. (On the CPU the
#   measured ratio was larger: 1.3-1.5 training images/s vs 18-24 inference crops/s, paper variant at
#   batch 16 vs batch 64; if the GPU ratio were 5x, add two thirds to the training rows.)
#     region classifiers   6 x 507 M / 5,700 /s = 6 x 88,900 s = 6 x 24.7      = ~148   GPU-h
#     MultiBox             466,771 images x 30 epochs = 14.0 M images / 5,700 /s =   ~0.7 GPU-h
#     proposals            MultiBox 476,688 images / 17,000 /s = 28 s            =   ~0.0 GPU-h
#                          (+ selective search on the CPU: 476,688 x 0.25-0.30 CPU s = 33-40 CPU-h)
#     detection on val2    ensemble: 9,917 images x 0.61 s (paper mode, compiled) =  ~1.7 GPU-h
#                          model 1 alone: at most the same, ~1 GPU-h             =   ~1.0 GPU-h
#     total (ImageNet weights from torchvision)                                  = ~152   GPU-h
#     optional backbone    1.28 M ImageNet images x 30 epochs / 5,700 /s         =   ~1.9 GPU-h
#                          (GPU-bound figure; ~5,700 JPEG decodes + augmentations/s need ~40 CPU cores)
#   On 8 H100s (NPROC=8): ~19 hours. EPOCHS=2 cuts the region classifiers to ~30 GPU-h (R-CNN fine-tuned
#   its ILSVRC model for 50 k steps of 128 = 6.4 M crops, 0.13 of one epoch here). Data loading: 5,700
#   crops/s = 44 batches/s x 32 images = ~1,400 JPEG decodes/s per GPU: give WORKERS ~10 per GPU.
#   Host memory: `detect train` holds every training image's proposals (~466,771 x 1,440 x 16 B = ~11 GB)
#   in each process.
#
# tests/detect/test_recipe.py runs this very file on a tiny ILSVRC-layout set (CPU, 2 models, 32 px crops)
# and checks that a second run skips every step.
#
# Needs GNU coreutils (cp -rs) and awk; runs the `detect` and `backbone` console scripts of this project
# (`pip install -e .`) and `torchrun` when NPROC > 1.
set -euo pipefail

# ------------------------------------------------------------------------------------------------ knobs
DATA_ROOT=${DATA_ROOT:-ILSVRC}                 # ILSVRC DET layout (see above)
OUT_ROOT=${OUT_ROOT:-runs/ilsvrc2014}          # everything this script writes
VAL1_LIST=${VAL1_LIST:-$DATA_ROOT/ImageSets/DET/val1.txt}   # R-CNN's val1.txt
VAL2_LIST=${VAL2_LIST:-$DATA_ROOT/ImageSets/DET/val2.txt}   # R-CNN's val2.txt
VAL_LIST=${VAL_LIST:-$DATA_ROOT/ImageSets/DET/val.txt}      # the devkit's val.txt (name index)
TRAIN_LIST=${TRAIN_LIST:-}                     # optional subset of train; empty = all of train
USE_VAL1=${USE_VAL1:-1}                        # 1: train on train + val1 (R-CNN); 0: train only
BLACKLIST=${BLACKLIST:-$DATA_ROOT/devkit/data/ILSVRC2014_det_validation_blacklist.txt}
IMAGE_EXT=${IMAGE_EXT:-.JPEG}                  # suffix of the images under Data/DET
DEVICE=${DEVICE:-cuda}                         # cuda, cuda:1, cpu
NPROC=${NPROC:-1}                              # GPUs; > 1 runs training and detection under torchrun
WORKERS=${WORKERS:-8}                          # data-loading processes per GPU (~10 keep an H100 fed)
PROPOSAL_WORKERS=${PROPOSAL_WORKERS:-$(( WORKERS > 0 ? WORKERS : 1 ))}  # selective-search processes

BACKBONE=${BACKBONE:-imagenet}                 # imagenet (torchvision's weights) | train | none | PATH
VARIANT=${VARIANT:-}                           # GoogLeNet variant; default: torchvision for imagenet, else paper
IMAGENET_TRAIN=${IMAGENET_TRAIN:-imagenet/train}   # ImageFolder tree for BACKBONE=train
BACKBONE_EPOCHS=${BACKBONE_EPOCHS:-30}         # `backbone train`'s default (the paper gives none)
BACKBONE_IMAGE_SIZE=${BACKBONE_IMAGE_SIZE:-224}  # Table 1: 224 x 224 input
BACKBONE_BATCH=${BACKBONE_BATCH:-128}          # global batch

MB_EPOCHS=${MB_EPOCHS:-30}                     # `detect multibox train`'s default (the paper gives none)
MB_PRIORS=${MB_PRIORS:-800}                    # ~800 priors (Erhan et al. 2014)
MB_INPUT_SIZE=${MB_INPUT_SIZE:-224}            # square input, multiple of 32
MB_BATCH=${MB_BATCH:-128}                      # global batch
MB_TOP_K=${MB_TOP_K:-200}                      # section 8: 200 MultiBox proposals per image
SUPERPIXEL_SCALE=${SUPERPIXEL_SCALE:-2}        # section 8: superpixel size increased 2x

NUM_MODELS=${NUM_MODELS:-6}                    # section 8 / Table 5: ensemble of 6
SEED_BASE=${SEED_BASE:-1}                      # model i gets seed SEED_BASE + i - 1
SAMPLING_VARIANTS=${SAMPLING_VARIANTS:-1}      # 1: models cycle through 3 sampling variations; 0: seeds only
EPOCHS=${EPOCHS:-10}                           # passes over the positives (`detect train`'s default)
CROP_SIZE=${CROP_SIZE:-224}                    # warped region side (GoogLeNet's input)
PADDING=${PADDING:-16}                         # R-CNN: 16 px of context at the warped size
BATCH_SIZE=${BATCH_SIZE:-128}                  # regions per step, 32 positives + 96 background (R-CNN)
RC_EXTRA_ARGS=${RC_EXTRA_ARGS:-}               # more `detect train` flags for every model (e.g. --lr 0.002)
MB_EXTRA_ARGS=${MB_EXTRA_ARGS:-}               # more `detect multibox train` flags
BACKBONE_EXTRA_ARGS=${BACKBONE_EXTRA_ARGS:-}   # more `backbone train` flags

NMS_IOU=${NMS_IOU:-0.3}                        # R-CNN's per-class NMS
SCORE_THRESHOLD=${SCORE_THRESHOLD:-0.01}       # evaluation wants low-scored detections too
MAX_DETECTIONS=${MAX_DETECTIONS:-100}          # per image
DETECT_BATCH=${DETECT_BATCH:-512}              # crops per forward pass (BENCHMARKS: best at 512-1024)
COMPILE=${COMPILE:-auto}                       # torch.compile the classifiers: auto = on for cuda
EVAL_SINGLE=${EVAL_SINGLE:-1}                  # 1: also detect + evaluate model 1 alone (Table 6's figure)

# ------------------------------------------------------------------------------------------ helpers
say() { printf '\n== %s  [%s]\n' "$*" "$(date '+%F %T')"; }
skip() { printf '== skip: %s (%s exists)\n' "$1" "$2"; }
die() { printf 'reproduce_ilsvrc2014: %s\n' "$*" >&2; exit 1; }
abspath() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd -P)" "$(basename "$1")"); }

# `tool ARGS...` on one process, or under torchrun on NPROC processes (the commands that support it)
distributed() {
    local tool=$1; shift
    if (( NPROC > 1 )); then
        torchrun --standalone --nproc-per-node "$NPROC" -m "$tool" "$@"
    else
        "$tool" "$@"
    fi
}

# --resume when a previous run of this step left a resumable checkpoint
resume_flag() { if [[ -e "$1/last.pt" ]]; then printf -- '--resume'; fi; }

# Sampling of region classifier i (1-based). The paper's ensemble members differ "in sampling methodologies
# and the random order in which they see input images" (section 7); which sampling, it does not say.
sampling_flags() {
    (( SAMPLING_VARIANTS )) || return 0
    case $(( ($1 - 1) % 3 )) in
        0) ;;                                   # R-CNN: background from the positive's image, IoU [0, 0.5)
        1) printf -- '--background-from any' ;; # R-CNN's window layer: background from any image
        2) printf -- '--bg-iou-low 0.1' ;;      # harder background, IoU [0.1, 0.5) (Fast R-CNN)
    esac
}

# a split file (first column: image name) -> "name index" with the devkit's val.txt indices
devkit_indexed() {
    local list=$1 out=$2
    if [[ -f "$VAL_LIST" ]]; then
        awk 'NR == FNR { idx[$1] = $2; next }
             NF { if (!($1 in idx)) { printf "%s: %s is not in val.txt\n", FILENAME, $1 > "/dev/stderr"; exit 1 }
                  print $1, idx[$1] }' "$VAL_LIST" "$list" > "$out.tmp"
    else
        echo "warning: no $VAL_LIST: image indices are positions in $list (the blacklist may miss)" >&2
        awk 'NF { print $1 }' "$list" > "$out.tmp"
    fi
    mv "$out.tmp" "$out"
}

# symlink SRC/<name>SUFFIX to DST/<name>SUFFIX for every name (first column) of LIST
link_list() {
    local src=$1 dst=$2 suffix=$3 list=$4 name
    while read -r name _; do
        [[ -n "$name" ]] || continue
        [[ -e "$src/$name$suffix" ]] || die "$src/$name$suffix: listed in $list but not found"
        mkdir -p "$(dirname "$dst/$name$suffix")"
        ln -sfn "$src/$name$suffix" "$dst/$name$suffix"
    done < "$list"
}

# ------------------------------------------------------------------------------------------ checks
for d in Annotations/DET/train Annotations/DET/val Data/DET/train Data/DET/val; do
    [[ -d "$DATA_ROOT/$d" ]] || die "$DATA_ROOT/$d: no such folder (set DATA_ROOT to the ILSVRC root)"
done
for f in "$VAL1_LIST" "$VAL2_LIST" ${TRAIN_LIST:+"$TRAIN_LIST"}; do
    [[ -f "$f" ]] || die "$f: no such file (R-CNN's val1/val2 lists: see the header of this script)"
done
command -v detect > /dev/null || die "the 'detect' command is not on PATH (pip install -e . in this project)"
if (( NPROC > 1 )); then command -v torchrun > /dev/null || die "NPROC=$NPROC needs torchrun"; fi
if [[ "$COMPILE" == auto ]]; then [[ "$DEVICE" == cuda* ]] && COMPILE=1 || COMPILE=0; fi

DATA=$(abspath "$DATA_ROOT")
mkdir -p "$OUT_ROOT"
OUT=$(abspath "$OUT_ROOT")
SPLITS=$OUT/splits
echo "reproduce_ilsvrc2014: data $DATA -> $OUT; device $DEVICE x $NPROC; $NUM_MODELS models," \
     "$EPOCHS epochs, crops $CROP_SIZE px; backbone $BACKBONE"

# ------------------------------------------------------------------------------------------ 1. splits
# Annotation folders hold symlinks to the XML files: <split>/train/<name>.xml and <split>/val/<name>.xml,
# so that image ids ("train/...", "val/...") agree between the train, val1 and trainval1 folders and one
# proposal cache serves them all; images/{train,val} point at Data/DET/{train,val}.
if [[ -e "$SPLITS/.done" ]]; then
    skip splits "$SPLITS/.done"
else
    say "1. splits: train ${TRAIN_LIST:+($TRAIN_LIST) }/ val1 / val2 under $SPLITS"
    rm -rf "$SPLITS" && mkdir -p "$SPLITS/images"
    ln -sfn "$DATA/Data/DET/train" "$SPLITS/images/train"
    ln -sfn "$DATA/Data/DET/val" "$SPLITS/images/val"
    devkit_indexed "$VAL1_LIST" "$SPLITS/val1.txt"
    devkit_indexed "$VAL2_LIST" "$SPLITS/val2.txt"
    for split in train trainval1; do
        mkdir -p "$SPLITS/$split"
        if [[ -n "$TRAIN_LIST" ]]; then
            link_list "$DATA/Annotations/DET/train" "$SPLITS/$split/train" .xml "$TRAIN_LIST"
        else
            cp -rs "$DATA/Annotations/DET/train" "$SPLITS/$split/train"
        fi
    done
    link_list "$DATA/Annotations/DET/val" "$SPLITS/val1/val" .xml "$SPLITS/val1.txt"
    link_list "$DATA/Annotations/DET/val" "$SPLITS/trainval1/val" .xml "$SPLITS/val1.txt"
    link_list "$DATA/Annotations/DET/val" "$SPLITS/val2/val" .xml "$SPLITS/val2.txt"
    link_list "$DATA/Data/DET/val" "$SPLITS/val2_images" "$IMAGE_EXT" "$SPLITS/val2.txt"
    touch "$SPLITS/.done"
fi
if (( USE_VAL1 )); then TRAIN_ANN=$SPLITS/trainval1; else TRAIN_ANN=$SPLITS/train; fi

# ------------------------------------------------------------------------------------------ 2. backbone
case "$BACKBONE" in
    imagenet) INIT=imagenet; VARIANT=${VARIANT:-torchvision} ;;
    none)     INIT=none; VARIANT=${VARIANT:-paper} ;;
    train)
        INIT=$OUT/backbone/model.pt; VARIANT=${VARIANT:-paper}
        if [[ -e "$INIT" ]]; then
            skip backbone "$INIT"
        else
            say "2. backbone: backbone train on $IMAGENET_TRAIN ($BACKBONE_EPOCHS epochs)"
            # shellcheck disable=SC2046,SC2086
            distributed backbone train --data "$IMAGENET_TRAIN" --out "$OUT/backbone" --variant "$VARIANT" \
                --image-size "$BACKBONE_IMAGE_SIZE" --epochs "$BACKBONE_EPOCHS" --batch-size "$BACKBONE_BATCH" \
                --workers "$WORKERS" --device "$DEVICE" $(resume_flag "$OUT/backbone") $BACKBONE_EXTRA_ARGS
        fi ;;
    *)  INIT=$BACKBONE; [[ -f "$INIT" ]] || die "BACKBONE=$INIT: no such file" ;;
esac
VARIANT_ARGS=()
if [[ -n "$VARIANT" ]]; then VARIANT_ARGS=(--variant "$VARIANT"); fi

# ------------------------------------------------------------------------------------------ 3. MultiBox
MB=$OUT/multibox/model.pt
if [[ -e "$MB" ]]; then
    skip multibox "$MB"
else
    say "3. multibox: detect multibox train on $TRAIN_ANN ($MB_EPOCHS epochs, $MB_PRIORS priors)"
    MB_INIT=()
    if [[ "$INIT" != none ]]; then MB_INIT=(--weights "$INIT"); fi
    # shellcheck disable=SC2046,SC2086
    distributed detect multibox train --annotations "$TRAIN_ANN" --images "$SPLITS/images" --out "$OUT/multibox" \
        "${MB_INIT[@]}" "${VARIANT_ARGS[@]}" --priors "$MB_PRIORS" --input-size "$MB_INPUT_SIZE" \
        --epochs "$MB_EPOCHS" --batch-size "$MB_BATCH" --workers "$WORKERS" --device "$DEVICE" --seed 0 \
        $(resume_flag "$OUT/multibox") $MB_EXTRA_ARGS
fi

# ------------------------------------------------------------------------------------------ 4. proposals
# One cache (OUT/proposals/paper-<hash>/, one file per image) for every split; an interrupted run resumes
# from it. The recall tables are the step's outputs; val2's recall@0.5 is the paper's "coverage".
PROPOSALS=$OUT/proposals
mkdir -p "$PROPOSALS"
SPLIT_NAMES=(train val2)
if (( USE_VAL1 )); then SPLIT_NAMES=(train val1 val2); fi
for split in "${SPLIT_NAMES[@]}"; do
    table=$PROPOSALS/$split.recall.txt
    if [[ -e "$table" ]]; then skip "proposals $split" "$table"; continue; fi
    say "4. proposals: $split (SS x$SUPERPIXEL_SCALE + $MB_TOP_K MultiBox), $PROPOSAL_WORKERS processes"
    detect proposals --annotations "$SPLITS/$split" --images "$SPLITS/images" --method paper --weights "$MB" \
        --superpixel-scale "$SUPERPIXEL_SCALE" --top-k "$MB_TOP_K" --cache "$PROPOSALS" \
        --workers "$PROPOSAL_WORKERS" --device "$DEVICE" --gt > "$table.tmp"
    cat "$table.tmp"
    mv "$table.tmp" "$table"
done
mapfile -t caches < <(ls -1td "$PROPOSALS"/paper-*/ 2> /dev/null)
(( ${#caches[@]} )) || die "no proposal cache under $PROPOSALS"
CACHE=${caches[0]%/}
if (( ${#caches[@]} > 1 )); then echo "warning: ${#caches[@]} proposal caches under $PROPOSALS; using the newest, $CACHE" >&2; fi

# ------------------------------------------------------------------------------------------ 5. region classifiers
RC_MODELS=()
for (( i = 1; i <= NUM_MODELS; i++ )); do
    run=$OUT/rc$i
    RC_MODELS+=("$run/model.pt")
    if [[ -e "$run/model.pt" ]]; then skip "region classifier $i" "$run/model.pt"; continue; fi
    seed=$(( SEED_BASE + i - 1 ))
    say "5. region classifier $i/$NUM_MODELS: seed $seed $(sampling_flags "$i")"
    # shellcheck disable=SC2046,SC2086
    distributed detect train --annotations "$TRAIN_ANN" --images "$SPLITS/images" --proposals-cache "$CACHE" \
        --weights "$INIT" "${VARIANT_ARGS[@]}" --crop-size "$CROP_SIZE" --padding "$PADDING" \
        --batch-size "$BATCH_SIZE" --epochs "$EPOCHS" --seed "$seed" --device "$DEVICE" --workers "$WORKERS" \
        --out "$run" $(sampling_flags "$i") $(resume_flag "$run") $RC_EXTRA_ARGS
done

# ------------------------------------------------------------------------------------------ 6. detection on val2
# `detect run` recomputes the proposals (it reads no cache); its COCO-results JSON names each image's file,
# which `detect eval` matches to the val2 ground truth.
mkdir -p "$OUT/val2"
RUN_ARGS=(--multibox-weights "$MB" --proposals paper --superpixel-scale "$SUPERPIXEL_SCALE" --device "$DEVICE"
          --score-threshold "$SCORE_THRESHOLD" --nms-iou "$NMS_IOU" --max-detections "$MAX_DETECTIONS"
          --batch-size "$DETECT_BATCH" --workers "$PROPOSAL_WORKERS" --quiet)
if (( COMPILE )); then RUN_ARGS+=(--compile); fi
RUNS=(ensemble)
if (( EVAL_SINGLE )); then RUNS=(single ensemble); fi
for name in "${RUNS[@]}"; do
    dets=$OUT/val2/$name.json
    if [[ -e "$dets" ]]; then skip "detection $name" "$dets"; continue; fi
    if [[ $name == single ]]; then models=("${RC_MODELS[0]}"); else models=("${RC_MODELS[@]}"); fi
    say "6. detection on val2: $name (${#models[@]} model(s))"
    distributed detect run "$SPLITS/val2_images" --weights "${models[@]}" --out "$dets" "${RUN_ARGS[@]}"
done

# ------------------------------------------------------------------------------------------ 7. evaluation
EVAL_ARGS=()
if [[ -f "$BLACKLIST" ]]; then EVAL_ARGS=(--blacklist "$BLACKLIST"); else echo "note: no blacklist ($BLACKLIST)"; fi
for name in "${RUNS[@]}"; do
    summary=$OUT/val2/eval_$name/summary.json
    if [[ -e "$summary" ]]; then skip "evaluation $name" "$summary"; continue; fi
    say "7. evaluation on val2 (ILSVRC devkit rule): $name"
    detect eval --annotations "$DATA/Annotations/DET/val" --image-set "$SPLITS/val2.txt" \
        --results "$OUT/val2/$name.json" --metric ilsvrc "${EVAL_ARGS[@]}" --out "$OUT/val2/eval_$name" \
        | tee "$OUT/val2/eval_$name.txt"
done

# ------------------------------------------------------------------------------------------ 8. report
say "8. the paper's figures beside ours"
"${PYTHON:-python3}" - "$OUT" "$NUM_MODELS" "$EVAL_SINGLE" > "$OUT/results.txt.tmp" <<'EOF'
import json, sys
from pathlib import Path

out, models, single = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"

def mAP(name):
    return json.loads((out / "val2" / f"eval_{name}" / "summary.json").read_text())["metrics"]["mAP"]

def recall(split):  # the `detect proposals --gt` table: header line, then the values
    lines = (out / "proposals" / f"{split}.recall.txt").read_text().split("\n")
    head = next(i for i, line in enumerate(lines) if "recall@0.5" in line)
    names, values = lines[head].split(), lines[head + 1].split()
    return float(values[names.index("recall@0.5") - len(names)])  # from the right: "gt boxes" is two words

rows = [("proposal coverage, recall@0.5 (section 8)", "93 %", f"{100 * recall('val2'):.1f} %")]
if single:
    rows.append(("single model, mAP (Table 6)", "38.02 %", f"{100 * mAP('single'):.2f} %"))
rows.append((f"ensemble, mAP (Table 5: 6 models; here {models})", "43.9 %", f"{100 * mAP('ensemble'):.2f} %"))
print(f"{'':50} {'paper (ILSVRC14 test)':>22} {'this run (val2)':>16}")
for what, paper, ours in rows:
    print(f"{what:50} {paper:>22} {ours:>16}")
EOF
mv "$OUT/results.txt.tmp" "$OUT/results.txt"
cat "$OUT/results.txt"
echo "(written to $OUT/results.txt)"
