//! A checkpoint write killed at a random point leaves the previous checkpoint intact:
//! a child process rewrites a large safetensors file in a loop through
//! `io::write_atomically` and is killed with SIGKILL at random times; after each kill the
//! file must parse and hold one complete version.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

const CHILD: &str = "TSUMUGI_CRASH_SAFE_SAVE_CHILD";
const ELEMENTS: usize = 2 << 20; // 8 MiB of f32, so a write takes a while

/// A safetensors file whose every element equals `version`.
fn payload(version: u32) -> Vec<u8> {
    let data = vec![version as f32; ELEMENTS];
    let view = TensorView::new(Dtype::F32, vec![ELEMENTS], bytemuck::cast_slice(&data)).unwrap();
    safetensors::tensor::serialize([("weights", view)], None).unwrap()
}

/// The version a complete file holds; panics on a torn or corrupt one.
fn version_in(path: &Path) -> u32 {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).expect("the checkpoint parses");
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(file.tensor("weights").unwrap().data());
    assert_eq!(values.len(), ELEMENTS);
    let first = values[0];
    assert!(values.iter().all(|&v| v == first), "a file mixing two versions");
    first as u32
}

#[test]
fn a_checkpoint_write_killed_at_random_points_leaves_a_complete_file() {
    let dir = std::env::temp_dir().join(format!("tsumugi-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    if let Ok(target) = std::env::var(CHILD) {
        // The child: rewrite the file forever, each time with the next version after the
        // one the file holds now.
        let path = Path::new(&target);
        for version in version_in(path) + 1.. {
            tsumugi::io::write_atomically(path, &payload(version)).unwrap();
        }
        return;
    }
    tsumugi::io::write_atomically(&path, &payload(0)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut last = 0;
    for _ in 0..12 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_checkpoint_write_killed_at_random_points_leaves_a_complete_file",
                "--nocapture",
            ])
            .env(CHILD, &path)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
        child.kill().unwrap();
        child.wait().unwrap();
        let version = version_in(&path);
        assert!(version >= last, "the file went back from version {last} to {version}");
        last = version;
    }
    assert!(last > 0, "the child never finished a write; the test proved nothing");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The (version in the weights, version in the metadata) of a checkpoint written by
/// `io::save_checkpoint_with`; panics on a torn or corrupt one.
fn versions_in_checkpoint(path: &Path) -> (u32, u32) {
    let (_, metadata) = tsumugi::io::read_checkpoint_metadata(path).expect("the checkpoint parses");
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(file.tensor("weights").unwrap().data());
    assert!(values.iter().all(|&v| v == values[0]), "a file mixing two versions");
    (values[0] as u32, metadata["epoch"].parse().unwrap())
}

#[test]
fn a_checkpoint_with_metadata_killed_at_random_points_keeps_weights_and_metadata_together() {
    const CHILD_META: &str = "TSUMUGI_CRASH_SAFE_SAVE_META_CHILD";
    let dir = std::env::temp_dir().join(format!("tsumugi-crash-meta-{}", std::process::id()));
    let path = dir.join("checkpoint.safetensors");
    // A store of one large parameter whose every element is the version; the metadata
    // says the same version as its "epoch".
    let save = |path: &Path, version: u32| {
        let ctx = tsumugi::Context::new().unwrap();
        let mut store = tsumugi::graph::ParamStore::new();
        let weights = tsumugi::Tensor::full(&ctx, &[ELEMENTS / 4], version as f32).unwrap();
        store.add("weights", weights, true).unwrap();
        let metadata = tsumugi::io::Metadata::from([("epoch".to_string(), version.to_string())]);
        tsumugi::io::save_checkpoint_with(path, &store, u64::from(version), &metadata).unwrap();
    };
    if let Ok(target) = std::env::var(CHILD_META) {
        let path = Path::new(&target);
        let ctx = tsumugi::Context::new().unwrap();
        let (mut version, _) = versions_in_checkpoint(path);
        loop {
            version += 1;
            let mut store = tsumugi::graph::ParamStore::new();
            let weights = tsumugi::Tensor::full(&ctx, &[ELEMENTS / 4], version as f32).unwrap();
            store.add("weights", weights, true).unwrap();
            let metadata = tsumugi::io::Metadata::from([("epoch".to_string(), version.to_string())]);
            tsumugi::io::save_checkpoint_with(path, &store, u64::from(version), &metadata).unwrap();
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    save(&path, 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut last = 0;
    // Files beside the checkpoint: a killed writer's temporary.
    let leftovers = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "checkpoint.safetensors")
            .collect()
    };
    let mut orphans_seen = 0;
    for _ in 0..12 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_checkpoint_with_metadata_killed_at_random_points_keeps_weights_and_metadata_together",
                "--nocapture",
            ])
            .env(CHILD_META, &path)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(200..900)));
        child.kill().unwrap();
        child.wait().unwrap();
        let (weights, epoch) = versions_in_checkpoint(&path);
        assert_eq!(weights, epoch, "weights and metadata disagree after a kill");
        orphans_seen += leftovers(&dir).len();
        assert!(weights >= last, "the file went back from version {last} to {weights}");
        last = weights;
    }
    assert!(last > 0, "the child never finished a save; the test proved nothing");
    // Kills left temporaries (each removed by the next child's first save), and the next
    // save removes the last one.
    assert!(orphans_seen > 0, "no kill left a temporary; the cleanup was not tested");
    save(&path, last + 1);
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "temporaries left behind");
    std::fs::remove_dir_all(dir).unwrap();
}
