// npc.wgsl: the game_npc example's own shaders. They bind tsumugi's generator buffers
// directly (the drawn tokens, u32 [B], and the sampled distributions, f32 [B, V]), so
// nothing the model produces goes through the CPU.
//
// append_tokens  (compute, one invocation per NPC) text[b, cursor[b] % L] = ASCII code of
//                the token the generator just drew; cursor[b] += 1
// vs_main/fs_main (one full-screen triangle) per NPC row: its last L characters in a
//                3x5 bitmap font scaled by `scale`, and beside them a strip of V bars,
//                bar j filled from the bottom for round(probs[b, j] * bar_h) pixels (a
//                pixel is filled when its centre is below that height), the drawn
//                token's bar in another colour.

struct Frame {
    width: u32,
    height: u32,
    streams: u32,
    vocab: u32,
    line_len: u32,
    scale: u32,
    row_h: u32,
    text_x: u32,
    bars_x: u32,
    bar_w: u32,
    bar_h: u32,
    top: u32,
}

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> probs: array<f32>;          // tsumugi, [B, V]
@group(0) @binding(2) var<storage, read> tokens: array<u32>;         // tsumugi, [B]
@group(0) @binding(3) var<storage, read> text: array<u32>;           // [B, L] ring of ASCII codes
@group(0) @binding(4) var<storage, read> cursor: array<u32>;         // [B] characters written
@group(0) @binding(5) var<storage, read> font: array<u32>;           // [96] glyphs of ASCII 32..127
@group(0) @binding(6) var<storage, read> charmap: array<u32>;        // [V] token -> ASCII
@group(0) @binding(7) var<storage, read_write> text_rw: array<u32>;  // `text`, for append_tokens
@group(0) @binding(8) var<storage, read_write> cursor_rw: array<u32>; // `cursor`, likewise

@compute @workgroup_size(64)
fn append_tokens(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= frame.streams) {
        return;
    }
    let count = cursor_rw[b];
    text_rw[b * frame.line_len + count % frame.line_len] = charmap[tokens[b]];
    cursor_rw[b] = count + 1u;
}

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    // One triangle covering the screen: (-1, -1), (3, -1), (-1, 3).
    let x = f32((i << 1u) & 2u) * 2.0 - 1.0;
    let y = f32(i & 2u) * 2.0 - 1.0;
    return vec4<f32>(x, y, 0.0, 1.0);
}

const BACKGROUND: vec4<f32> = vec4<f32>(0.06, 0.07, 0.10, 1.0);
const STRIP: vec4<f32> = vec4<f32>(0.13, 0.15, 0.20, 1.0);
const INK: vec4<f32> = vec4<f32>(0.85, 0.88, 0.92, 1.0);
const NEWEST: vec4<f32> = vec4<f32>(1.0, 0.80, 0.30, 1.0);
const BAR: vec4<f32> = vec4<f32>(0.30, 0.65, 0.95, 1.0);
const DRAWN: vec4<f32> = vec4<f32>(1.0, 0.45, 0.25, 1.0);

@fragment
fn fs_main(@builtin(position) position: vec4<f32>) -> @location(0) vec4<f32> {
    let px = u32(position.x);
    let py = u32(position.y);
    if (py < frame.top) {
        return BACKGROUND;
    }
    let row = (py - frame.top) / frame.row_h;
    if (row >= frame.streams) {
        return BACKGROUND;
    }
    let ly = py - (frame.top + row * frame.row_h);
    let cell_w = 4u * frame.scale;
    let cell_h = 6u * frame.scale;

    if (px >= frame.text_x && px < frame.text_x + frame.line_len * cell_w && ly < cell_h) {
        let col = (px - frame.text_x) / cell_w;
        let count = cursor[row];
        let shown = min(count, frame.line_len);
        if (col >= shown) {
            return BACKGROUND;
        }
        let ch = text[row * frame.line_len + (count - shown + col) % frame.line_len];
        let gx = ((px - frame.text_x) % cell_w) / frame.scale;
        let gy = ly / frame.scale;
        if (gx < 3u && gy < 5u && ch >= 32u && ch < 128u) {
            if (((font[ch - 32u] >> (gy * 3u + gx)) & 1u) != 0u) {
                return select(INK, NEWEST, col + 1u == shown);
            }
        }
        return BACKGROUND;
    }

    if (px >= frame.bars_x && px < frame.bars_x + frame.vocab * frame.bar_w && ly < frame.bar_h) {
        let offset = px - frame.bars_x;
        let j = offset / frame.bar_w;
        // A one-pixel gap on the right of each bar keeps neighbours apart.
        if (frame.bar_w > 1u && offset % frame.bar_w == frame.bar_w - 1u) {
            return STRIP;
        }
        let p = probs[row * frame.vocab + j];
        let height = f32(frame.bar_h) - (f32(ly) + 0.5);
        if (height < p * f32(frame.bar_h)) {
            return select(BAR, DRAWN, tokens[row] == j);
        }
        return STRIP;
    }
    return BACKGROUND;
}
