//! The pipeline log that CI's WGSL check reads (`TSUMUGI_PIPELINE_LOG`).
//!
//! When the variable names a file, every process that builds pipelines appends to it, one
//! JSON object per line:
//!
//! - once per process, a `"source"` line per family and module variant (portable, and
//!   with the subgroup section where the family has one) holding the WGSL a browser's
//!   WebGPU compiles ([`ShaderFamily::browser_source`]), so that the check compiles every
//!   entry point, dispatched or not, from the same text the crate composes;
//! - a `"pipeline"` line per pipeline a cache builds: family, entry point, whether the
//!   entry point is in the subgroup section, its override constants and its bindings.
//!
//! `.ci/tint/check.mjs` replays the log on Dawn (Tint) with each pipeline's explicit bind
//! group layout, so that every kernel the tests dispatch, with the overrides the launchers
//! chose, is compiled by a second WGSL compiler. Without the variable nothing is written.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use super::{shader_families, Access, KernelSpec};

/// The log's path, read once per process.
fn path() -> Option<&'static PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var_os("TSUMUGI_PIPELINE_LOG").map(PathBuf::from))
        .as_ref()
}

/// Appends `lines` in one write under a process-wide lock, so that lines from test threads
/// do not interleave (separate processes append whole writes with `O_APPEND`).
fn append(path: &PathBuf, lines: &str) {
    static WRITE: Mutex<()> = Mutex::new(());
    let _guard = WRITE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(lines.as_bytes()));
    // A debugging aid must not fail a user's dispatch; CI's check notices a missing or
    // short log instead (it requires the pipelines it expects).
    if let Err(error) = written {
        eprintln!(
            "tsumugi: cannot append to TSUMUGI_PIPELINE_LOG {}: {error}",
            path.display()
        );
    }
}

/// Logs `kernel` with `overrides` if the log is on; the first call in a process writes
/// every family's sources first.
pub(super) fn pipeline_built(kernel: &KernelSpec, overrides: &[(&'static str, u32)]) {
    let Some(path) = path() else { return };
    static SOURCES: OnceLock<()> = OnceLock::new();
    SOURCES.get_or_init(|| {
        let mut lines = String::new();
        for family in shader_families() {
            let variants: &[bool] = if family.has_subgroup_section() {
                &[false, true]
            } else {
                &[false]
            };
            for &subgroups in variants {
                lines.push_str(&format!(
                    "{{\"kind\":\"source\",\"family\":{},\"subgroups\":{subgroups},\"wgsl\":{}}}\n",
                    json_string(family.name),
                    json_string(&family.browser_source(subgroups)),
                ));
            }
        }
        append(path, &lines);
    });
    let overrides: Vec<String> = overrides
        .iter()
        .map(|&(name, value)| format!("{}:{value}", json_string(name)))
        .collect();
    let bindings: Vec<String> = kernel
        .bindings
        .iter()
        .map(|&(binding, access)| {
            let access = match access {
                Access::Read => "read",
                Access::ReadWrite => "read_write",
                Access::Params => "uniform",
            };
            format!("[{binding},\"{access}\"]")
        })
        .collect();
    append(
        path,
        &format!(
            "{{\"kind\":\"pipeline\",\"family\":{},\"entry_point\":{},\"subgroup_section\":{},\"overrides\":{{{}}},\"bindings\":[{}]}}\n",
            json_string(kernel.family.name),
            json_string(kernel.entry_point),
            kernel.family.in_subgroup_section(kernel.entry_point),
            overrides.join(","),
            bindings.join(","),
        ),
    );
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(json_string("a\"b\\c\nd\te\u{1}"), "\"a\\\"b\\\\c\\nd\\te\\u0001\"");
    }
}
