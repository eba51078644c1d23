//! Every shader parses and validates with naga, with no adapter needed.

use std::collections::BTreeSet;

#[test]
fn every_shader_family_parses_and_validates_with_naga() {
    for family in tsumugi::gpu::shader_families() {
        let source = family.composed_source();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|err| panic!("{}.wgsl does not parse:\n{}", family.name, err.emit_to_string(&source)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|err| {
                panic!(
                    "{}.wgsl does not validate:\n{}",
                    family.name,
                    err.emit_to_string(&source)
                )
            });
    }
}

/// DESIGN.md: kernels fit the browser column, at most 8 storage buffers per entry point
/// (a vec4 alias of a buffer counts as one more binding), so they run under WebGPU too.
#[test]
fn every_entry_point_binds_at_most_eight_storage_buffers() {
    for family in tsumugi::gpu::shader_families() {
        let source = family.composed_source();
        let module = naga::front::wgsl::parse_str(&source).expect("parses (checked above)");
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .expect("validates (checked above)");
        for (index, entry) in module.entry_points.iter().enumerate() {
            let uses = info.get_entry_point(index);
            let storage: Vec<&str> = module
                .global_variables
                .iter()
                .filter(|(handle, var)| {
                    matches!(var.space, naga::AddressSpace::Storage { .. }) && !uses[*handle].is_empty()
                })
                .map(|(_, var)| var.name.as_deref().unwrap_or("?"))
                .collect();
            assert!(
                storage.len() <= 8,
                "{}.wgsl {} binds {} storage buffers: {storage:?}",
                family.name,
                entry.name,
                storage.len()
            );
        }
    }
}

#[test]
fn every_wgsl_file_is_a_registered_family() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("shaders/")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wgsl") && name != "common.wgsl")
        .map(|name| name.trim_end_matches(".wgsl").to_string())
        .collect();
    let registered: BTreeSet<String> = tsumugi::gpu::shader_families()
        .iter()
        .map(|family| family.name.to_string())
        .collect();
    assert_eq!(on_disk, registered, "every shaders/*.wgsl must be in shader_families()");
}
