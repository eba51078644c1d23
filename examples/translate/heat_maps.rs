//! The attention heat maps written after training: a grey PNG per sentence and an SVG
//! with the tokens on its axes.

use std::path::Path;

use tsumugi::graph::ParamStore;
use tsumugi::io::write_atomically;
use tsumugi::text::{word_tokens, Pair};
use tsumugi::Context;

use crate::translator::{max_output_len, Translator};
use crate::AnyResult;

/// The chapter's `visualize_attention` for a few sentences: `attention_N.png` (a grey
/// heat map, one row per output character, one column per source word, darker = more
/// weight) and
/// `attention_N.svg` (the same with the tokens on the axes; a PNG would need a font with
/// Japanese glyphs).
pub fn heat_maps(
    ctx: &Context,
    store: &mut ParamStore,
    model: &Translator,
    pairs: &[Pair],
    out: &Path,
) -> AnyResult<()> {
    std::fs::create_dir_all(out).map_err(|err| format!("cannot create {}: {err}", out.display()))?;
    let sentences: Vec<&str> = pairs.iter().map(|p| p.source.as_str()).collect();
    let (src, lengths, steps) = model.source_batch(ctx, &sentences)?;
    let (ids, maps) = model.greedy(ctx, store, &src, &lengths, max_output_len(steps), true)?;
    for (n, (pair, (ids, map))) in pairs.iter().zip(ids.iter().zip(&maps)).enumerate() {
        let mut source: Vec<String> = word_tokens(&pair.source)
            .into_iter()
            .map(|w| model.src_vocab.token(model.src_vocab.id(&w)).to_string())
            .collect();
        source.push("<eos>".to_string());
        let mut output: Vec<String> = model.tgt_vocab.decode(ids).iter().map(|s| s.to_string()).collect();
        if output.len() < ids.len() {
            output.push("<eos>".to_string());
        }
        let rows: Vec<Vec<f32>> = map
            .iter()
            .take(output.len())
            .map(|r| r[..source.len()].to_vec())
            .collect();
        let png = out.join(format!("attention_{}.png", n + 1));
        let svg = out.join(format!("attention_{}.svg", n + 1));
        write_atomically(&png, &heat_map_png(&rows)?)?;
        write_atomically(&svg, heat_map_svg(&rows, &source, &output).as_bytes())?;
    }
    println!(
        "attention heat maps of {} dev sentences: {}/attention_*.png and .svg",
        pairs.len(),
        out.display()
    );
    Ok(())
}

/// The largest weight of a map: the colour scale runs from 0 (white) to it (black), as
/// matplotlib's `imshow` scales to the data.
fn max_weight(rows: &[Vec<f32>]) -> f32 {
    rows.iter().flatten().fold(0.0f32, |a, &b| a.max(b)).max(1e-6)
}

fn shade_of(weight: f32, top: f32) -> u8 {
    (255.0 * (1.0 - (weight / top).clamp(0.0, 1.0))).round() as u8
}

/// Cells of `CELL` pixels, white (0) to black (the map's largest weight), one-pixel grey
/// grid lines.
fn heat_map_png(rows: &[Vec<f32>]) -> AnyResult<Vec<u8>> {
    const CELL: usize = 24;
    let (h, w) = (rows.len().max(1), rows.first().map_or(1, Vec::len).max(1));
    let (width, height) = (w * CELL + 1, h * CELL + 1);
    let mut pixels = vec![160u8; width * height];
    let top = max_weight(rows);
    for (r, row) in rows.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let shade = shade_of(v, top);
            for y in r * CELL + 1..(r + 1) * CELL {
                pixels[y * width + c * CELL + 1..y * width + (c + 1) * CELL].fill(shade);
            }
        }
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(bytes)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The heat map as SVG: source words along the top (rotated), output characters down
/// the left, the weight in each cell's title.
fn heat_map_svg(rows: &[Vec<f32>], source: &[String], output: &[String]) -> String {
    const CELL: usize = 28;
    let (left, top) = (60, 90);
    let top_weight = max_weight(rows);
    let width = left + source.len() * CELL + 10;
    let height = top + output.len() * CELL + 10;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"14\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (c, word) in source.iter().enumerate() {
        let x = left + c * CELL + CELL / 2;
        svg += &format!(
            "<text transform=\"translate({x},{}) rotate(-60)\">{}</text>\n",
            top - 6,
            xml_escape(word)
        );
    }
    for (r, ch) in output.iter().enumerate() {
        let y = top + r * CELL + CELL / 2 + 5;
        svg += &format!(
            "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">{}</text>\n",
            left - 6,
            xml_escape(ch)
        );
        for (c, &v) in rows.get(r).map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
            let shade = shade_of(v, top_weight);
            svg += &format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"rgb({shade},{shade},{shade})\" stroke=\"#aaa\"><title>{v:.3}</title></rect>\n",
                left + c * CELL,
                top + r * CELL
            );
        }
    }
    svg += "</svg>\n";
    svg
}
