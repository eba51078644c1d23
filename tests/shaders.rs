//! Every shader parses and validates with naga, with no adapter needed.

use std::collections::BTreeSet;

#[test]
fn every_shader_family_parses_and_validates_with_naga() {
    for family in tsumugi::gpu::shader_families() {
        let source = family.composed_source(true);
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

/// What a device without subgroup operations compiles: every family without its subgroup
/// section validates without the subgroup capabilities, and the section is what needs them.
#[test]
fn every_family_without_its_subgroup_section_validates_without_subgroup_operations() {
    let without_subgroups = naga::valid::Capabilities::all()
        & !(naga::valid::Capabilities::SUBGROUP | naga::valid::Capabilities::SUBGROUP_BARRIER);
    let validate = |source: &str| {
        let module = naga::front::wgsl::parse_str(source).map_err(|err| err.emit_to_string(source))?;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), without_subgroups)
            .validate(&module)
            .map(|_| ())
            .map_err(|err| err.emit_to_string(source))
    };
    let mut with_sections = 0;
    for family in tsumugi::gpu::shader_families() {
        let source = family.composed_source(false);
        assert!(
            !source.contains("subgroup"),
            "{}.wgsl keeps subgroup code outside its section",
            family.name
        );
        validate(&source).unwrap_or_else(|err| panic!("{}.wgsl without subgroups:\n{err}", family.name));
        if family.has_subgroup_section() {
            with_sections += 1;
            assert!(
                validate(&family.composed_source(true)).is_err(),
                "{}.wgsl's subgroup section validates without subgroup operations",
                family.name
            );
        }
    }
    assert!(with_sections >= 2, "matmul and lstm_cell have subgroup sections");
}

/// Kernels fit WebGPU's default limits (shaders/README.md): at most 8 storage buffers per entry point
/// (a vec4 alias of a buffer counts as one more binding), so they run under WebGPU too.
#[test]
fn every_entry_point_binds_at_most_eight_storage_buffers() {
    for family in tsumugi::gpu::shader_families() {
        let source = family.composed_source(true);
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

/// The files src/gpu/pipeline.rs prepends to families: not families themselves.
const PRELUDES: [&str; 5] = [
    "common.wgsl",
    "common_subgroup.wgsl",
    "common_recurrent.wgsl",
    "common_gated.wgsl",
    "common_select.wgsl",
];

#[test]
fn every_wgsl_file_is_a_registered_family() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("shaders/")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wgsl") && !PRELUDES.contains(&name.as_str()))
        .map(|name| name.trim_end_matches(".wgsl").to_string())
        .collect();
    let registered: BTreeSet<String> = tsumugi::gpu::shader_families()
        .iter()
        .map(|family| family.name.to_string())
        .collect();
    assert_eq!(on_disk, registered, "every shaders/*.wgsl must be in shader_families()");
}
