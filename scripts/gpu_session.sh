#!/usr/bin/env bash
# A device call for issue 25 (item 3, the GPU-scale study; part 4's DP models) and issue 24's
# stacked-trainer figures, prepared so that a session lent a GPU spends its 15 device minutes on the
# work, not on setup (docs/gpu_session.md has the whole story):
#
#   bash scripts/gpu_session.sh prepare   # here: wheels, CIFAR-10, the DP carry into .gpu/; docs/results untracked
#   run(command="bash scripts/gpu_session.sh device", carry=[".gpu"], timeout_s=590)
#   run(command="GPU_TASKS=dp GPU_SECONDS=N bash scripts/gpu_session.sh device", ...)   # if time is left
#   bash scripts/gpu_session.sh restore   # here, right after the calls: docs/results tracked again
#   bash scripts/gpu_session.sh unpack FILES_AT docs/results/gpu_resnet18_call   # what came back
#
# - the device copies every tracked file and allows 64 MiB; docs/results alone is ~90 MB (carries and
#   published results.json), so `prepare` takes it out of the index for the call and `restore` puts it
#   back (commit nothing in between: the index then says docs/results is deleted);
# - the device has torch, numpy, scikit-learn, safetensors, matplotlib, tqdm and pillow but neither
#   pydantic nor opacus, and reaches no network: the wheels travel in .gpu/whl;
# - ../shared does not travel: the 19 MB CIFAR-10 archive goes in .gpu/data;
# - the device has no .git: the commit travels in .gpu/commit.
# GPU_OFFLINE=1 skips the wheel download (tests/test_gpu_session.py, which has no network).
# `device` runs its tasks against a deadline (GPU_SECONDS, default 560 s from its start) and returns
# inside the call's limit with whatever finished: by default the ResNet-18 timing (the estimate the GPU
# config lacks), the 8-model call config trained under --hours and audited if every model landed, and
# the ResNet-20 stacking benchmark if time is left; task dp trains part 4's missing DP-SGD models.
set -euo pipefail
cd "$(dirname "$0")/.."

CALL_CONFIG=${GPU_CONFIG:-configs/gpu_cifar10_resnet18_call.yaml}  # GPU_CONFIG: a small one to try the script on a CPU
# GPU_TASKS: what `device` runs, in order, from resnet18, call, stack, dp; `call` alone is a dry run.
TASKS=${GPU_TASKS:-resnet18 call stack}

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

travelling_bytes() {  # tracked + untracked-not-ignored files (.gpu is ignored: carried, counted apart)
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
    # Part 4's DP models so far (task dp trains the rest on top of them).
    local carry=docs/results/regime_12500/carry_dp.tar.gz
    if [ -f "$carry" ]; then install -m 644 "$carry" .gpu/carry_dp.tar.gz; fi
    # The device runs Python 3.12 (device tool notes, KINDS.md); the versions are the ones installed
    # here, which the tests pass with. typing-extensions too: pydantic needs a recent one.
    local wheels
    wheels=$(python3 -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("pydantic", "pydantic-core", "annotated-types",
                                        "typing-inspection", "typing-extensions", "opacus")))')
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
    if [ $((tree + gpu)) -gt $((64 * 1048576)) ]; then
        echo "gpu_session prepare: warning: over the device's 64 MiB; the call would be refused" >&2
    fi
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

task_resnet18() {  # the time estimate the GPU config's header still lacks
    [ "$(left)" -gt 30 ] || { phase "ResNet-18 timing: no time left"; return 0; }
    phase "ResNet-18 timing (the GPU study's recipe: 25,000 members, 30 epochs, batch 512)"
    timeout "$(( $(left) < 100 ? $(left) : 100 ))" python3 benchmarks/gpu_population.py \
        --models resnet18 --k 1 8 --steps 8 --members 25000 --batch-size 512 \
        --query-rows 55000 --audit-models 16 >"$out/bench_resnet18.json" || echo "ResNet-18 timing: rc $?"
}

train_within() {  # SECONDS LOG CONFIG RUN VARIANT...: `privquant run --train-only` under --hours
    local seconds=$1 log=$2 config=$3 run=$4
    shift 4
    # Progress bars go to the log only: the call's reply keeps the last 12,000 characters.
    timeout "$(( seconds + 30 ))" python3 -m privquant run "$config" --out "$run" --train-only "$@" \
        --hours "$(awk "BEGIN{print $seconds/3600}")" >"$log" 2>&1 || echo "training $config: rc $?"
    tr '\r' '\n' <"$log" | grep -a -E "budget|models only|job\]$|Error" | tail -n 20
}

task_call() {  # the 8-model part of the GPU study: trained under --hours, audited if all landed
    local run=runs/gpu_call reserve=150 train_s
    train_s=$(( $(left) - reserve ))
    [ "$train_s" -gt 60 ] || { phase "call config: no time left"; return 0; }
    phase "training $CALL_CONFIG within $train_s s"
    train_within "$train_s" "$out/call.log" "$CALL_CONFIG" "$run" fp32 qat4
    if ! grep -q "models only, finished in" "$out/call.log"; then
        phase "not every model landed: no audit (call.log gives each model's time)"
    elif [ "$(left)" -gt 30 ]; then
        phase "audit"
        timeout "$(( $(left) - 20 ))" python3 -m privquant run "$CALL_CONFIG" --out "$run" \
            >>"$out/call.log" 2>&1 || echo "audit: rc $?"
        tr '\r' '\n' <"$out/call.log" | grep -a -v -E "it/s\]$|job/s\]$|s/job\]$|target/s\]$" | tail -n 30
        if [ -f "$run/results.json" ]; then
            python3 scripts/publish_run.py "$run" /tmp/published
            tar czf "$out/published.tar.gz" -C /tmp published
        fi
    fi
}

task_dp() {  # issue 25 size 3 part 4: the DP-SGD models still missing, on top of the carried ones
    local config=${GPU_DP_CONFIG:-configs/cifar10_regime_12500_dp.yaml} cache train_s
    cache=$(python3 -c "from privquant.pipeline import load_config as l; print(l('$config').cache_dir)")
    train_s=$(( $(left) - 40 ))
    [ "$train_s" -gt 60 ] || { phase "DP models: no time left"; return 0; }
    if [ -f .gpu/carry_dp.tar.gz ]; then
        python3 scripts/carry_cache.py unpack .gpu/carry_dp.tar.gz "$cache"
    fi
    phase "DP-SGD models of $config within $train_s s"
    train_within "$train_s" "$out/dp.log" "$config" runs/gpu_dp dp_eps8 dp_vacuous
    # Every DP model in the cache, the carried ones too: the archive replaces the carry. A call
    # returns files of at most 16 MiB (a ResNet-20 is ~1 MB), hence the parts.
    python3 scripts/carry_cache.py pack "$cache" /tmp/carry_dp.tar.gz --defense dp_sgd
    split -b 15m -d /tmp/carry_dp.tar.gz "$out/carry_dp.tar.gz.part"
}

task_stack() {  # issue 24: models per hour when K models train as one stacked network
    [ "$(left)" -gt 90 ] || { phase "ResNet-20 stacking: no time left"; return 0; }
    phase "ResNet-20 stacking (issue 24's recipe: 5,000 members, K = 1, 8, 64)"
    timeout "$(( $(left) - 10 ))" python3 benchmarks/gpu_population.py --models resnet20 \
        --k 1 8 64 --steps 10 >"$out/bench_resnet20.json" || echo "ResNet-20 stacking: rc $?"
}

device() {
    local task
    start=$(date +%s)
    out="${OUT:?device: OUT is not set (this mode runs on the device machine)}"
    exec > >(tee -a "$out/session.log") 2>&1
    export PYTHONUNBUFFERED=1 PRIVQUANT_DATA="$PWD/.gpu/data"

    phase "setup (tasks: $TASKS)"
    nvidia-smi || echo "no nvidia-smi"
    if ! python3 -c "import pydantic, opacus" 2>/dev/null; then  # the device has neither; a dry run here has both
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .gpu/whl/*.whl
    fi
    export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    echo "code: commit $(cat .gpu/commit 2>/dev/null || echo unknown) (written by prepare)"
    python3 - <<'EOF'
import torch, pydantic, privquant
from privquant.artifacts.cache import code_version
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, pydantic {pydantic.__version__}, privquant {code_version()}, "
      f"cuda {cuda}{', ' + torch.cuda.get_device_name(0) if cuda else ''}")
EOF
    for task in $TASKS; do
        "task_$task" || echo "task $task: rc $? (going on with the next)"
    done
    phase "done"
    sleep 1  # let tee write the last lines before the call returns
}

left() { echo $(( ${GPU_SECONDS:-560} - ($(date +%s) - start) )); }  # seconds before the deadline
phase() { echo "== $(date -u +%H:%M:%S) ($(( $(date +%s) - start )) s) $*"; }

unpack() {  # DIR (the call's files_at) -> DEST, e.g. docs/results/gpu_resnet18_call
    local src="${1:?unpack: the folder the call returned files to}" dest="${2:?unpack: DEST}" f
    mkdir -p "$dest"
    for f in session.log bench_resnet18.json bench_resnet20.json call.log dp.log; do
        if [ -f "$src/$f" ]; then cp "$src/$f" "$dest/"; fi
    done
    if [ -f "$src/published.tar.gz" ]; then
        tar xzf "$src/published.tar.gz" --no-same-owner -C "$dest" --strip-components 1 published
    fi
    if ls "$src"/carry_dp.tar.gz.part* >/dev/null 2>&1; then
        cat "$src"/carry_dp.tar.gz.part* >"$dest/carry_dp.tar.gz"
        echo "DP carry joined: python scripts/carry_cache.py list $dest/carry_dp.tar.gz, then move it" \
             "to docs/results/regime_12500/carry_dp.tar.gz"
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
