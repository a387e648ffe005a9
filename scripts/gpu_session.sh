#!/usr/bin/env bash
# One device call for issue 25 item 3 (the GPU-scale study) and issue 24's stacked-trainer figures,
# prepared so that a session lent a GPU spends its 15 device minutes on the work, not on setup.
#
#   bash scripts/gpu_session.sh prepare   # here: wheels + CIFAR-10 into .gpu/, docs/results untracked
#   run(command="bash scripts/gpu_session.sh device", carry=[".gpu"], timeout_s=590)
#   bash scripts/gpu_session.sh restore   # here, right after the call: docs/results tracked again
#   bash scripts/gpu_session.sh unpack DIR docs/results/gpu_resnet18_call   # what came back
#
# Why each step (docs/gpu_session.md has the whole story):
# - the device copies every tracked file and allows 64 MiB; docs/results alone is ~90 MB (carries and
#   published results.json), so `prepare` takes it out of the index for the call and `restore` puts it
#   back (commit nothing in between: the index then says docs/results is deleted);
# - the device has torch, numpy, scikit-learn, safetensors, matplotlib, tqdm and pillow but no pydantic,
#   and reaches no network: the wheels travel in .gpu/whl;
# - ../shared does not travel: the 19 MB CIFAR-10 archive goes in .gpu/data.
# GPU_OFFLINE=1 skips the wheel download (tests/test_gpu_session.py, which has no network).
# `device` runs against a deadline (GPU_SECONDS, default 560 s from its start) so that it returns
# inside the call's limit with whatever finished: the ResNet-18 timing first (the time estimate the
# full config needs), then the 8-model call config trained under --hours, then its audit if every
# model landed, then the ResNet-20 stacking benchmark if time is left.
set -euo pipefail
cd "$(dirname "$0")/.."

CALL_CONFIG=${GPU_CONFIG:-configs/gpu_cifar10_resnet18_call.yaml}  # GPU_CONFIG: a small one to try the script on a CPU
BENCH=${GPU_BENCH:-1}  # 0 skips both timings (the same dry run)

exclude_file() {  # git's own ignore list (a worktree keeps it elsewhere; the device has no .git)
    git rev-parse --git-path info/exclude
}

exclude_line() {  # add $1 to the exclude file once
    local exclude
    exclude=$(exclude_file)
    mkdir -p "$(dirname "$exclude")"
    touch "$exclude"
    grep -qxF "$1" "$exclude" || echo "$1" >>"$exclude"
}

travelling_bytes() {  # tracked + untracked-not-ignored files, plus .gpu (carried)
    { git ls-files -z --cached; git ls-files -z --others --exclude-standard; } |
        sort -zu | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1
}

prepare() {
    if ! git diff --cached --quiet; then
        echo "gpu_session prepare: the index has staged changes; commit or unstage them first, so" \
             "that 'restore' can put the index back exactly" >&2
        exit 2
    fi
    local data="${PRIVQUANT_DATA:-../shared/datasets}/cifar10-jpeg.tar.gz"
    [ -f "$data" ] || { echo "gpu_session prepare: $data not found (set PRIVQUANT_DATA)" >&2; exit 2; }
    exclude_line "/.gpu/"
    mkdir -p .gpu/whl .gpu/data
    # The device has no .git: the commit travels as a file, for the results' provenance.
    git rev-parse HEAD >.gpu/commit
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        echo "gpu_session prepare: warning: uncommitted changes; what runs is not $(cat .gpu/commit)" >&2
    fi
    install -m 644 "$data" .gpu/data/
    # The device runs Python 3.12 (device tool notes, KINDS.md); the versions are the ones installed
    # here, which the tests pass with. typing-extensions too: pydantic needs a recent one.
    local wheels
    wheels=$(python3 -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("pydantic", "pydantic-core", "annotated-types",
                                        "typing-inspection", "typing-extensions")))')
    # shellcheck disable=SC2086  # one word per requirement
    [ "${GPU_OFFLINE:-0}" = 1 ] || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .gpu/whl $wheels
    git rm -r -q --cached docs/results
    exclude_line "/docs/results/"
    local tree gpu
    tree=$(travelling_bytes)
    gpu=$(du -sb .gpu | cut -f1)
    echo "what travels: $(awk "BEGIN{printf \"%.1f\", $tree/1048576}") MiB of tree +" \
         "$(awk "BEGIN{printf \"%.1f\", $gpu/1048576}") MiB in .gpu (limit 64 MiB)"
    echo "docs/results is out of the index until 'bash scripts/gpu_session.sh restore': commit nothing before it"
    echo 'next: run(command="bash scripts/gpu_session.sh device", carry=[".gpu"], timeout_s=590)'
}

restore() {
    local exclude
    exclude=$(exclude_file)
    git reset -q -- docs/results
    if [ -f "$exclude" ]; then
        grep -vxF "/docs/results/" "$exclude" >"$exclude.tmp" || true
        mv "$exclude.tmp" "$exclude"
    fi
    git status --short -- docs/results | head -5
    echo "docs/results tracked again (.gpu/ stays, ignored)"
}

device() {
    local start out run py
    start=$(date +%s)
    out="${OUT:?device: OUT is not set (this mode runs on the device machine)}"
    run=runs/gpu_call
    py=python3
    exec > >(tee -a "$out/session.log") 2>&1
    export PYTHONUNBUFFERED=1 PRIVQUANT_DATA="$PWD/.gpu/data"
    left() { echo $(( ${GPU_SECONDS:-560} - ($(date +%s) - start) )); }
    phase() { echo "== $(date -u +%H:%M:%S) ($(( $(date +%s) - start )) s) $*"; }

    phase "setup"
    nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi"
    if ! $py -c "import pydantic" 2>/dev/null; then  # the device has none; a dry run here has it
        $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .gpu/whl/*.whl
    fi
    export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    echo "code: commit $(cat .gpu/commit 2>/dev/null || echo unknown) (written by prepare)"
    $py - <<'EOF'
import torch, pydantic, privquant
from privquant.artifacts.cache import code_version
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, pydantic {pydantic.__version__}, privquant {code_version()}, "
      f"cuda {cuda}{', ' + torch.cuda.get_device_name(0) if cuda else ''}")
EOF

    if [ "$BENCH" = 1 ]; then
        phase "ResNet-18 timing (the full study's recipe: 25,000 members, 30 epochs, batch 512)"
        timeout "$(( $(left) < 100 ? $(left) : 100 ))" $py benchmarks/gpu_population.py \
            --models resnet18 --k 1 8 --steps 8 --members 25000 --batch-size 512 \
            --query-rows 55000 --audit-models 16 >"$out/bench_resnet18.json" || echo "ResNet-18 timing: rc $?"
    fi

    local reserve=150 train_s
    train_s=$(( $(left) - reserve ))
    if [ "$train_s" -gt 60 ]; then
        phase "training $CALL_CONFIG within $train_s s"
        # Progress bars go to the log only: the call's reply keeps the last 12,000 characters.
        timeout "$(( train_s + 60 ))" $py -m privquant run "$CALL_CONFIG" --out "$run" \
            --train-only fp32 qat4 --hours "$(awk "BEGIN{print $train_s/3600}")" \
            >"$out/train.log" 2>&1 || echo "training: rc $?"
        tr '\r' '\n' <"$out/train.log" | grep -a -E "budget|time budget|models only|job\]$|Error" | tail -n 20
        if ! grep -q "models only, finished in" "$out/train.log"; then
            phase "not every model landed: no audit (train.log gives each model's time)"
        elif [ "$(left)" -gt 30 ]; then
            phase "audit"
            timeout "$(( $(left) - 20 ))" $py -m privquant run "$CALL_CONFIG" --out "$run" \
                >"$out/audit.log" 2>&1 || echo "audit: rc $?"
            tr '\r' '\n' <"$out/audit.log" | grep -a -v -E "it/s\]$|job/s\]$" | tail -n 40
            if [ -f "$run/results.json" ]; then
                $py scripts/publish_run.py "$run" /tmp/published
                tar czf "$out/published.tar.gz" -C /tmp published
            fi
        fi
    fi

    if [ "$BENCH" = 1 ] && [ "$(left)" -gt 90 ]; then
        phase "ResNet-20 stacking (issue 24's recipe: 5,000 members, K = 1, 8, 64)"
        timeout "$(( $(left) - 10 ))" $py benchmarks/gpu_population.py --models resnet20 \
            --k 1 8 64 --steps 10 >"$out/bench_resnet20.json" || echo "ResNet-20 stacking: rc $?"
    fi
    phase "done"
}

unpack() {  # DIR (the call's files_at) -> docs/results/NAME
    local src="${1:?unpack: the folder the call returned files to}" dest="${2:?unpack: docs/results/NAME}"
    mkdir -p "$dest"
    for f in session.log nvidia-smi.txt bench_resnet18.json bench_resnet20.json train.log audit.log; do
        [ -f "$src/$f" ] && cp "$src/$f" "$dest/"
    done
    if [ -f "$src/published.tar.gz" ]; then
        tar xzf "$src/published.tar.gz" --no-same-owner -C "$dest" --strip-components 1 published
    fi
    ls -la "$dest"
}

case "${1:-}" in
    prepare) prepare ;;
    restore) restore ;;
    device) device ;;
    unpack) shift; unpack "$@" ;;
    *) echo "usage: bash scripts/gpu_session.sh prepare|device|restore|unpack DIR DEST" >&2; exit 2 ;;
esac
