//! The chapter's plots as PNG files: `visualize_attention`'s heat map (seaborn's
//! `heatmap(annot=True, cmap='YlOrRd')` with the tokens on the axes), exercise 4's bar
//! chart and heat map, exercise 5's loss curves and accuracy bars. Drawn with plotters'
//! bitmap backend; its text goes through plotters' `ab_glyph` feature with a font file
//! from the system, because the tokens on the attention axes are Japanese and no font
//! is built into plotters: a CJK font (Debian: fonts-ipafont-gothic; CI installs it) or
//! `--font FILE`. A font without a glyph that a chart needs is an error naming it.

use std::path::{Path, PathBuf};

use ab_glyph::Font;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::common::{AnyResult, Walk};

/// Japanese fonts at their Debian paths (and where fontconfig links the default one),
/// the first that exists is used.
const FONT_PATHS: [&str; 7] = [
    "/usr/share/fonts/opentype/ipafont-gothic/ipagp.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/vlgothic/VL-Gothic-Regular.ttf",
    "/usr/share/fonts/truetype/takao-gothic/TakaoGothic.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
];

const FAMILY: &str = "sans-serif";

/// The font's bytes, kept for the process (plotters wants `&'static [u8]`).
static FONT: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();

/// Finds and registers the font once; every text drawn must pass [`check_glyphs`].
fn load_font(walk: &mut Walk) -> AnyResult<()> {
    if walk.font_loaded {
        return Ok(());
    }
    let path: PathBuf = match &walk.font {
        Some(path) => path.clone(),
        None => FONT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "no font with Japanese glyphs for the PNGs' token labels: none of {} exists. \
                     Install one (Debian/Ubuntu: apt-get install fonts-ipafont-gothic) or pass --font FILE",
                    FONT_PATHS.join(", ")
                )
            })?,
    };
    let bytes = std::fs::read(&path).map_err(|err| format!("cannot read the font {}: {err}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    ab_glyph::FontRef::try_from_slice(bytes).map_err(|err| format!("{}: not a font ({err})", path.display()))?;
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("plotters cannot use the font {}", path.display()))?;
    let _ = FONT.set(bytes);
    println!("(PNG text in {})", path.display());
    walk.font_loaded = true;
    Ok(())
}

/// An error naming the first character of `texts` the font has no glyph for.
fn check_glyphs<'a>(walk: &Walk, texts: impl IntoIterator<Item = &'a str>) -> AnyResult<()> {
    let bytes = FONT.get().ok_or("the font is not loaded")?;
    let font = ab_glyph::FontRef::try_from_slice(bytes)?;
    for text in texts {
        if let Some(c) = text.chars().find(|&c| !c.is_whitespace() && font.glyph_id(c).0 == 0) {
            return Err(format!(
                "the font {} has no glyph for {c:?} (U+{:04X}, in {text:?}); pass --font with a CJK font",
                walk.font.as_ref().map_or("found".into(), |p| p.display().to_string()),
                c as u32
            )
            .into());
        }
    }
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn err(e: impl std::fmt::Display) -> String {
    format!("plotting: {e}")
}

/// Draws a `w x h` figure with `draw`, writes it to `out/name` as PNG and records it.
pub fn figure(
    walk: &mut Walk,
    name: &str,
    (w, h): (u32, u32),
    texts: &[&str],
    draw: impl FnOnce(&Area<'_>) -> AnyResult<()>,
) -> AnyResult<PathBuf> {
    load_font(walk)?;
    check_glyphs(walk, texts.iter().copied())?;
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(err)?;
    }
    let path = walk.out.join(name);
    write_png(&path, w, h, &pixels)?;
    walk.pngs.push(path.clone());
    Ok(path)
}

fn write_png(path: &Path, w: u32, h: u32, pixels: &[u8]) -> AnyResult<()> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    tsumugi::io::write_atomically(path, &bytes)?;
    Ok(())
}

/// matplotlib's YlOrRd at `t` in [0, 1] (its nine anchor colours, linearly between).
pub fn yl_or_rd(t: f32) -> RGBColor {
    const ANCHORS: [(u8, u8, u8); 9] = [
        (255, 255, 204),
        (255, 237, 160),
        (254, 217, 118),
        (254, 178, 76),
        (253, 141, 60),
        (252, 78, 42),
        (227, 26, 28),
        (189, 0, 38),
        (128, 0, 38),
    ];
    let x = t.clamp(0.0, 1.0) * 8.0;
    let i = (x.floor() as usize).min(7);
    let f = x - i as f32;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    let mix = |p: u8, q: u8| (p as f32 + (q as f32 - p as f32) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn text_style(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).pos(Pos::new(h, v))
}

/// What a heat map shows: `values` `[rows, cols]` row-major, labels per row and column.
pub struct Heat<'a> {
    pub values: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub x_ticks: &'a [String],
    pub y_ticks: &'a [String],
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub title: &'a str,
    /// Write each cell's value in it (`annot=True, fmt='.2f'`).
    pub annotate: bool,
}

impl Heat<'_> {
    /// Every text the map draws (for the glyph check).
    pub fn texts(&self) -> Vec<&str> {
        let mut texts: Vec<&str> = self.x_ticks.iter().chain(self.y_ticks).map(String::as_str).collect();
        texts.extend([self.x_label, self.y_label, self.title, "Attention Weight"]);
        texts
    }
}

/// A heat map filling `area`: the cells coloured by value (YlOrRd from the smallest to the
/// largest value, as seaborn's `heatmap` and `imshow` scale by default), the
/// tokens under the columns and left of the rows, a colour bar on the right.
pub fn heat_map(area: &Area<'_>, heat: &Heat<'_>) -> AnyResult<()> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let (left, right, top, bottom) = (130, 110, 50, 80);
    let (cw, ch) = (
        (w - left - right) / heat.cols.max(1) as i32,
        (h - top - bottom) / heat.rows.max(1) as i32,
    );
    let max = heat.values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = heat.values.iter().copied().fold(f32::INFINITY, f32::min);
    let span = (max - min).max(f32::MIN_POSITIVE);
    let scale = |v: f32| (v - min) / span;
    area.draw(&Text::new(
        heat.title.to_string(),
        (w / 2, 22),
        text_style(22, HPos::Center, VPos::Center),
    ))
    .map_err(err)?;
    for r in 0..heat.rows {
        for c in 0..heat.cols {
            let v = heat.values[r * heat.cols + c];
            let (x0, y0) = (left + c as i32 * cw, top + r as i32 * ch);
            area.draw(&Rectangle::new(
                [(x0, y0), (x0 + cw, y0 + ch)],
                yl_or_rd(scale(v)).filled(),
            ))
            .map_err(err)?;
            if heat.annotate {
                let ink = if scale(v) > 0.6 { WHITE } else { BLACK };
                area.draw(&Text::new(
                    format!("{v:.2}"),
                    (x0 + cw / 2, y0 + ch / 2),
                    text_style(15, HPos::Center, VPos::Center).color(&ink),
                ))
                .map_err(err)?;
            }
        }
    }
    for (c, tick) in heat.x_ticks.iter().enumerate() {
        let x = left + c as i32 * cw + cw / 2;
        area.draw(&Text::new(
            tick.clone(),
            (x, top + heat.rows as i32 * ch + 8),
            text_style(16, HPos::Center, VPos::Top),
        ))
        .map_err(err)?;
    }
    for (r, tick) in heat.y_ticks.iter().enumerate() {
        let y = top + r as i32 * ch + ch / 2;
        area.draw(&Text::new(
            tick.clone(),
            (left - 8, y),
            text_style(16, HPos::Right, VPos::Center),
        ))
        .map_err(err)?;
    }
    area.draw(&Text::new(
        heat.x_label.to_string(),
        (left + heat.cols as i32 * cw / 2, h - 22),
        text_style(17, HPos::Center, VPos::Center),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        heat.y_label.to_string(),
        (14, top + heat.rows as i32 * ch / 2),
        text_style(17, HPos::Center, VPos::Center).transform(FontTransform::Rotate270),
    ))
    .map_err(err)?;
    // The colour bar: min at the bottom, max at the top, five ticks.
    let (bx, bar_h) = (left + heat.cols as i32 * cw + 20, heat.rows as i32 * ch);
    for y in 0..bar_h {
        let t = 1.0 - y as f32 / bar_h.max(1) as f32;
        area.draw(&Rectangle::new(
            [(bx, top + y), (bx + 18, top + y + 1)],
            yl_or_rd(t).filled(),
        ))
        .map_err(err)?;
    }
    for k in 0..=4 {
        let y = top + bar_h - k * bar_h / 4;
        area.draw(&Text::new(
            format!("{:.2}", min + span * k as f32 / 4.0),
            (bx + 24, y),
            text_style(13, HPos::Left, VPos::Center),
        ))
        .map_err(err)?;
    }
    area.draw(&Text::new(
        "Attention Weight".to_string(),
        (bx + 80, top + bar_h / 2),
        text_style(14, HPos::Center, VPos::Center).transform(FontTransform::Rotate90),
    ))
    .map_err(err)?;
    Ok(())
}

/// A bar chart with a labelled y axis in `y_range` and a label under each bar
/// (`plt.bar`), each bar's value written above it when `values_on_top`.
#[allow(clippy::too_many_arguments)]
pub fn bars(
    area: &Area<'_>,
    title: &str,
    labels: &[String],
    values: &[f32],
    colours: &[RGBColor],
    (x_label, y_label): (&str, &str),
    y_range: (f32, f32),
    values_on_top: bool,
) -> AnyResult<()> {
    let n = values.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f32..n as f32 - 0.5, y_range.0..y_range.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-3 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(230, 230, 230))
        .draw()
        .map_err(err)?;
    for (i, &v) in values.iter().enumerate() {
        let x = i as f32;
        let colour = colours[i % colours.len()];
        chart
            .draw_series([Rectangle::new([(x - 0.35, 0.0), (x + 0.35, v)], colour.filled())])
            .map_err(err)?;
        if values_on_top {
            chart
                .draw_series([Text::new(
                    format!("{v:.4}"),
                    (x, v + 0.02 * (y_range.1 - y_range.0)),
                    text_style(14, HPos::Center, VPos::Bottom),
                )])
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Loss curves over epochs (`plt.plot` per series, a legend, a grid).
pub fn curves(area: &Area<'_>, title: &str, series: &[(&str, RGBColor, &[f32])]) -> AnyResult<()> {
    let epochs = series.iter().map(|s| s.2.len()).max().unwrap_or(1).max(2);
    let all = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .filter(|v| v.is_finite());
    let high = all.clone().fold(f32::MIN_POSITIVE, f32::max) * 1.05;
    let low = all.fold(f32::INFINITY, f32::min).min(high) * 0.95;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f32..(epochs - 1) as f32, low..high)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("Epoch")
        .y_desc("Loss")
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(230, 230, 230))
        .draw()
        .map_err(err)?;
    for &(name, colour, values) in series {
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(i, &v)| (i as f32, v)),
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}
