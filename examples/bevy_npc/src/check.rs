//! The pixel check of the last frame (as tests/game.rs checks game_npc's) and the
//! helpers that read it back and save it.

use std::path::Path;

use crate::render::Layout;

/// The contents of a mapped buffer, which is unmapped afterwards.
pub fn read_mapped<T: bytemuck::Pod>(buffer: &wgpu::Buffer) -> Vec<T> {
    let values = {
        let view = buffer.slice(..).get_mapped_range().expect("a mapped readback");
        bytemuck::pod_collect_to_vec(&view[..])
    };
    buffer.unmap();
    values
}

/// Every NPC's bars against its probabilities, as tests/game.rs checks game_npc's: bar j
/// of row b is a run of round(p * bar_h) filled pixels from the bottom (within one), in
/// the highlight colour iff j is the token drawn. Returns how many different heights
/// were seen.
pub fn check_bars(layout: &Layout, pixels: &[u8], probs: &[f32], tokens: &[u32]) -> Result<usize, String> {
    let (streams, vocab, bar_h) = (layout.streams as usize, layout.vocab as usize, layout.bar_h);
    let width = layout.width as usize;
    let pixel = |x: u32, y: u32| {
        let at = (y as usize * width + x as usize) * 4;
        [pixels[at], pixels[at + 1], pixels[at + 2]]
    };
    // BAR is light blue, DRAWN orange, the strip's background dark: red or blue above
    // the middle means filled.
    let filled = |[r, _, b]: [u8; 3]| r > 128 || b > 128;
    let mut heights_seen = std::collections::BTreeSet::new();
    for row in 0..streams {
        let drawn = tokens[row] as usize;
        if drawn >= vocab {
            return Err(format!(
                "NPC {row}: drew token {drawn}, outside the vocabulary of {vocab}"
            ));
        }
        for j in 0..vocab {
            let p = f64::from(probs[row * vocab + j]);
            let (x, bottom) = layout.bar_column(row, j);
            let count = (1..=bar_h).filter(|&dy| filled(pixel(x, bottom - dy))).count();
            let want = p * f64::from(bar_h);
            if (count as f64 - want).abs() > 1.0 {
                return Err(format!(
                    "NPC {row}, bar {j}: {count} pixels tall, probability {p} x {bar_h} = {want:.2}"
                ));
            }
            if !(1..=count as u32).all(|dy| filled(pixel(x, bottom - dy))) {
                return Err(format!(
                    "NPC {row}, bar {j}: its filled pixels are not one run from the bottom"
                ));
            }
            if count > 0 {
                let [r, _, b] = pixel(x, bottom - 1);
                if (r > 200 && b < 128) != (j == drawn) {
                    return Err(format!(
                        "NPC {row}, bar {j}: highlighted should be {} (token drawn: {drawn})",
                        j == drawn
                    ));
                }
            }
            heights_seen.insert(count);
        }
        let sum: f32 = probs[row * vocab..(row + 1) * vocab].iter().sum();
        if (sum - 1.0).abs() > 1e-5 {
            return Err(format!("NPC {row}: probabilities sum to {sum}"));
        }
    }
    // A blank strip could pass the per-bar test only if every probability were under
    // one pixel; bars of several heights show that something was drawn.
    if heights_seen.len() < 3 {
        return Err(format!("bars of fewer than 3 heights: {heights_seen:?}"));
    }
    Ok(heights_seen.len())
}

pub fn save_png(path: &Path, width: u32, height: u32, rgba: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgba).map_err(|e| e.to_string())
}
