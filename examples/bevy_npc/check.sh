#!/usr/bin/env bash
# The Bevy example's pixel test: builds examples/bevy_npc (Bevy 0.20, Rust 1.97.1 from
# its rust-toolchain.toml), then runs it headless twice on the Vulkan adapter Bevy picks
# (lavapipe where there is no GPU: `apt-get install mesa-vulkan-drivers libvulkan1`):
# first training the model and saving it as a safetensors checkpoint, then loading that
# checkpoint. Each run renders its frames in Bevy's render world and exits non-zero
# unless every bar of the last frame equals the probability tsumugi computed within one
# pixel and tsumugi created no device of its own; the two runs must print the same lines.
#
#   examples/bevy_npc/check.sh          (CARGO_TARGET_DIR is honoured; default: the crate's target/)
set -euo pipefail
cd "$(dirname "$0")"
if command -v rustup >/dev/null; then
    rustup toolchain install "$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)" --profile minimal
fi
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
start=$(date +%s)
# Not --locked: Cargo.lock pins Bevy's tree, but tsumugi is a path dependency whose own
# dependencies may change; cargo then adds them without upgrading what is pinned.
cargo build --release
echo "bevy_npc: build took $(($(date +%s) - start)) s"
checkpoint="$target/bevy_npc_check.safetensors"
rm -f "$checkpoint"
for run in train load; do
    start=$(date +%s)
    cargo run --release -- --frames 30 --npcs 16 --bar-height 100 \
        --checkpoint "$checkpoint" --out "$target/bevy_npc_$run.png" | tee "$target/bevy_npc_$run.log"
    echo "bevy_npc: the $run run took $(($(date +%s) - start)) s"
done
# Same seeds, same weights: the loaded checkpoint makes the NPCs say what the trained model said.
if ! diff <(grep '^NPC ' "$target/bevy_npc_train.log") <(grep '^NPC ' "$target/bevy_npc_load.log"); then
    echo "bevy_npc: the loaded checkpoint speaks differently from the model that was saved" >&2
    exit 1
fi
echo "bevy_npc: both runs passed; the loaded model said the same $(grep -c '^NPC ' "$target/bevy_npc_load.log") lines"
