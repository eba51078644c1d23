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
