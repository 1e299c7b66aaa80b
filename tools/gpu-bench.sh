#!/usr/bin/env bash
# Benchmarks depthcast on a lent GPU machine, which has no node and no network, and takes the
# working tree plus at most 64 MiB of carried (git-ignored) files.
#
#   tools/gpu-bench.sh pack [OUT_DIR]          # here: node + pruned production node_modules
#                                              #   -> OUT_DIR/depthcast-gpu.tar.xz (default .device/)
#   tools/gpu-bench.sh run [ARCHIVE] [--cpu]   # there (carry .device): unpack into a scratch folder,
#                                              #   check providers, run the benches, print figures
#   tools/gpu-bench.sh dry-run [SCRATCH]       # here: pack, then `run --cpu` with PATH holding only
#                                              #   the unpacked node (what the test runs); WebGPU
#                                              #   through SwiftShader, chromium's CPU Vulkan driver,
#                                              #   when it is installed
#
# `run` copies the tracked working tree into the scratch folder and puts the unpacked
# node_modules beside it, so the repository's own node_modules is never touched. It reports
# which providers can start (WebGPU needs the Vulkan loader and an NVIDIA ICD; CUDA needs its
# libraries and the CUDA EP, which the npm package does not carry), then runs
#   depthcast bench --sd-unet sd15 --unet-dtype fp16 --device webgpu
#   depthcast bench --controlnet-only --device webgpu   (composed graph and two sessions)
# and the same on cuda when it starts; with --cpu, it probes cpu and webgpu and runs only
# `bench --controlnet-only --quick` on the CPU.
#
# Environment: XZ_OPT (default "-6 -T0"; a test may pass a faster level and GPU_BENCH_LIMIT_MIB=0),
# GPU_BENCH_LIMIT_MIB (default 60: the archive plus the tree must stay under 64 MiB; 0 = no check),
# SCRATCH (where `run` unpacks; default a new temporary folder).
set -euo pipefail

die() { echo "gpu-bench: ERROR: $*" >&2; exit 1; }
say() { echo "gpu-bench: $*"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ort_dir=node_modules/onnxruntime-node/bin/napi-v6/linux/x64

pack() {
  local out archive limit_mib stage node_bin raw size
  out=$(mkdir -p "${1:-$root/.device}" && cd "${1:-$root/.device}" && pwd)
  archive=$out/depthcast-gpu.tar.xz
  limit_mib=${GPU_BENCH_LIMIT_MIB:-60}
  [[ -f $root/$ort_dir/onnxruntime_binding.node ]] || die "$ort_dir is missing: run npm install first"
  node_bin=$(readlink -f "$(command -v node)") || die "no node on PATH"
  stage=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $stage is local
  trap "rm -rf '$stage'" RETURN
  mkdir -p "$stage/bin" "$stage/node_modules"

  # node, stripped when the stripped copy runs (about 12 MiB less before compression).
  cp "$node_bin" "$stage/bin/node"
  if command -v strip >/dev/null && strip -o "$stage/bin/node.s" "$stage/bin/node" 2>/dev/null &&
    "$stage/bin/node.s" -e 'process.exit(0)'; then
    mv "$stage/bin/node.s" "$stage/bin/node"
  else
    rm -f "$stage/bin/node.s"
  fi
  "$stage/bin/node" -e 'process.exit(0)' || die "the copied node does not run"

  # Production dependencies only, as npm resolves them (nested ones come with their parent).
  local -a pkgs
  local p
  mapfile -t pkgs < <(cd "$root" && npm ls --omit=dev --all --parseable 2>/dev/null |
    sed -n "s#^$root/##p" | grep -Ev '^node_modules/.*/node_modules/' | sort -u)
  ((${#pkgs[@]} > 10)) || die "npm ls --omit=dev listed only ${#pkgs[@]} packages"
  # tsx's esbuild is also a devDependency here, so npm ls --omit=dev leaves it out; tsx needs it.
  for p in node_modules/esbuild node_modules/@esbuild/linux-x64; do
    [[ -d $root/$p ]] && pkgs+=("$p")
  done
  (cd "$root" && tar -chf - "${pkgs[@]}") | tar -xf - -C "$stage"

  local m=$stage/node_modules d
  for d in "$m"/onnxruntime-node/bin/napi-v6/*/*; do [[ $d == */linux/x64 ]] || rm -rf "$d"; done
  find "$m/onnxruntime-node/bin/napi-v6" -mindepth 1 -type d -empty -delete
  for d in "$m"/@img/*; do
    case ${d##*/} in colour | sharp-linux-x64 | sharp-libvips-linux-x64) ;; *) rm -rf "$d" ;; esac
  done
  for d in "$m"/@esbuild/* "$m"/*/prebuilds/*; do [[ ${d##*/} == linux-x64 ]] || rm -rf "$d"; done
  # Not needed to run the service or the bench: the code generators of protobufjs, three (only the
  # browser page imports it, and the page is built before packing), esbuild's CLI copy of the
  # binary (tsx runs the one in @esbuild/linux-x64).
  rm -rf "$m/protobufjs/cli" "$m/three" "$m/esbuild/bin/esbuild"
  find "$m" -type f \( -name '*.md' -o -name '*.markdown' -o -name '*.map' \
    -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -delete
  for p in "$m"/[!@]* "$m"/@*/*; do rm -rf "$p/test" "$p/tests" "$p/__tests__"; done
  [[ -f $stage/$ort_dir/onnxruntime_binding.node ]] || die "$ort_dir did not make it into the bundle"

  raw=$(du -sb "$stage" | cut -f1)
  rm -f "$archive"
  XZ_OPT=${XZ_OPT:--6 -T0} tar -cJf "$archive" -C "$stage" bin node_modules
  size=$(stat -c %s "$archive")
  say "packed $archive: $(mib "$size") MiB (uncompressed $(mib "$raw") MiB, node $(mib "$(stat -c %s "$stage/bin/node")") MiB, ${#pkgs[@]} packages)"
  if ((limit_mib > 0 && size > limit_mib * 1048576)); then
    rm -f "$archive"
    die "archive is $(mib "$size") MiB, over the ${limit_mib} MiB limit (64 MiB with the tree); removed it"
  fi
}

# The linker cache, read once: ldconfig lives in /sbin, which a minimal PATH (the dry run's)
# leaves out, and `ldconfig -p | grep -q` can fail under pipefail when grep stops reading early.
libs=""
has_lib() {
  [[ -n $libs ]] || libs=$("$(command -v ldconfig || echo /sbin/ldconfig)" -p 2>/dev/null || true)
  grep -qF "$1" <<<"$libs"
}

# Which providers can start here: prints one line each, never fails.
check_providers() {
  local icd found=no
  if command -v nvidia-smi >/dev/null; then say "GPU: $(nvidia-smi -L 2>/dev/null | head -1)"; else say "GPU: no nvidia-smi"; fi
  for icd in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do
    [[ -f $icd ]] && grep -qi nvidia "$icd" && found=$icd
  done
  local loader=no
  has_lib libvulkan.so.1 && loader=yes
  say "WebGPU (Vulkan): loader libvulkan.so.1 $loader; NVIDIA ICD ${found}"
  local lib cuda=""
  for lib in libcudart.so.12 libcublas.so.12 libcublasLt.so.12 libcudnn.so.9 libcufft.so.11; do
    if has_lib "$lib"; then cuda+=" $lib"; else cuda+=" (no $lib)"; fi
  done
  local ep=no
  [[ -f $tree/$ort_dir/libonnxruntime_providers_cuda.so ]] && ep=yes
  say "CUDA: libraries:$cuda; CUDA EP in the bundle: $ep (npm install --onnxruntime-node-install=cuda12 adds it)"
}

# Opens a session on each device with a tiny model: which providers really start.
probe_devices() {
  local dev
  node bin/depthcast.js models create-tiny "$scratch/probe" --family controlnet >/dev/null
  for dev in "$@"; do
    if node -e '
      const ort = require("onnxruntime-node");
      // Released before exiting: process.exit with a live WebGPU session segfaults in Dawn.
      ort.InferenceSession.create(process.argv[1], { executionProviders: [process.argv[2]], logSeverityLevel: 3 })
        .then((s) => s.release()).then(() => process.exit(0), (e) => { console.error(String(e.message).split("\n")[0]); process.exit(1); });
    ' "$scratch/probe/unet/model.onnx" "$dev" 2>"$scratch/probe.err"; then
      say "provider $dev: starts"
      started+=("$dev")
    else
      say "provider $dev: does not start ($(head -c 300 "$scratch/probe.err"))"
    fi
  done
}

run() {
  local archive="" cpu=no
  for a in "$@"; do
    case $a in --cpu) cpu=yes ;; *) archive=$a ;; esac
  done
  archive=${archive:-$root/.device/depthcast-gpu.tar.xz}
  [[ -f $archive ]] || die "no archive at $archive: run tools/gpu-bench.sh pack (and carry .device)"
  scratch=${SCRATCH:-$(mktemp -d)}
  tree=$scratch/tree
  mkdir -p "$tree"
  tar -xJf "$archive" -C "$scratch"
  (cd "$root" && git ls-files -z | xargs -0 tar -cf -) | tar -xf - -C "$tree"
  # The page is a build output (git-ignored); the service looks for it, the bench does not.
  mv "$scratch/node_modules" "$tree/node_modules"
  export PATH="$scratch/bin:$PATH"
  cd "$tree"
  say "node $(node --version) from $(command -v node); unpacked into $scratch"
  check_providers
  started=()
  if [[ $cpu == yes ]]; then
    probe_devices cpu webgpu
    node bin/depthcast.js bench --controlnet-only --quick --device cpu
    return
  fi
  probe_devices webgpu cuda
  local dev
  for dev in "${started[@]}"; do
    say "=== $dev: real-architecture SD 1.5 UNet, fp16, CFG batch 2 at 512² ==="
    node bin/depthcast.js bench --sd-unet sd15 --unet-dtype fp16 --device "$dev" || say "sd-unet bench on $dev failed"
    say "=== $dev: ControlNet at SD 1.5's residual sizes, composed graph and two sessions ==="
    node bin/depthcast.js bench --controlnet-only --device "$dev" || say "ControlNet bench on $dev failed"
  done
  ((${#started[@]})) || say "no GPU provider started: nothing to time on the GPU"
  say "published, for comparison: ORT CUDA SD 1.5 ~21 ms/step on an A100 (50 steps 1.04-1.11 s);" \
    "SD-Turbo 1 step 512² on an A100 38 ms; StreamDiffusion on a 4090 ~10.6 ms/frame"
}

case ${1:-} in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  dry-run)
    shift
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT # the archive, also when a step fails
    pack "$dir"
    # A real WebGPU adapter without a GPU, so the unpacked bundle's WebGPU EP is probed too.
    swiftshader=/usr/lib/chromium/vk_swiftshader_icd.json
    if [[ -f $swiftshader && -z ${VK_ICD_FILENAMES:-} ]]; then
      export VK_ICD_FILENAMES=$swiftshader XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$dir}
      say "WebGPU: Vulkan pointed at SwiftShader ($swiftshader), a CPU driver"
    fi
    # Only system tools on PATH; run puts the unpacked node first (the test checks which node ran).
    SCRATCH=${1:-$(mktemp -d)} PATH=/usr/bin:/bin run "$dir/depthcast-gpu.tar.xz" --cpu
    ;;
  *) die "usage: tools/gpu-bench.sh pack [OUT_DIR] | run [ARCHIVE] [--cpu] | dry-run [SCRATCH]" ;;
esac
