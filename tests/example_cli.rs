//! The examples under hostile use, as built by `cargo test` (which builds every example
//! beside the tests): training on nothing, or training no step, never replaces a saved
//! model; flags an f64 takes but f32 cannot are errors before anything runs; output paths
//! are checked before training. Each case runs the example binary and checks its exit code,
//! its message and the files it left.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The example binary `name`, built by `cargo test` next to the test binaries.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let examples = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps")
        .join("examples");
    let path = examples.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (run it without --test filters)",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(example(name))
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {name}: {err}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tsumugi-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_learning_rate_infinite_in_f32_is_a_flag_error_in_every_training_example() {
    for name in ["translate", "char_rnn", "sentiment"] {
        let output = run(name, &["--lr", "1e39"]);
        assert_eq!(output.status.code(), Some(2), "{name}: {}", stderr(&output));
        assert!(stderr(&output).contains("--lr"), "{name}: {}", stderr(&output));
    }
}

#[test]
fn sentiment_on_empty_data_or_zero_epochs_is_an_error_and_the_saved_model_stays() {
    let dir = folder("sentiment");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("rt-polarity.neg"), "").unwrap();
    std::fs::write(data.join("rt-polarity.pos"), "").unwrap();
    // A "saved model" that must survive.
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let model = out.join("sentiment_lstm.safetensors");
    std::fs::write(&model, b"the trained model").unwrap();
    let (data, out_arg) = (data.to_str().unwrap(), out.to_str().unwrap());
    let output = run("sentiment", &["--data", data, "--out", out_arg]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("rt-polarity.neg: no sentences"),
        "{}",
        stderr(&output)
    );
    let output = run("sentiment", &["--epochs", "0", "--out", out_arg]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(std::fs::read(&model).unwrap(), b"the trained model");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn char_rnn_that_trains_no_step_writes_nothing_and_a_bad_prime_fails_before_training() {
    let dir = folder("char_rnn");
    let text = dir.join("text.txt");
    std::fs::write(&text, "hello world, hello tsumugi. ".repeat(40)).unwrap();
    let checkpoint = dir.join("model.safetensors");
    let (text, checkpoint_arg) = (text.to_str().unwrap(), checkpoint.to_str().unwrap());
    let small = [
        "--data",
        text,
        "--checkpoint",
        checkpoint_arg,
        "--embed",
        "8",
        "--hidden",
        "8",
        "--layers",
        "1",
        "--batch",
        "2",
        "--seq-len",
        "8",
        "--length",
        "5",
        "--prime",
        "hello",
    ];
    let output = run("char_rnn", &[&small[..], &["--steps", "2"]].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let trained = std::fs::read(&checkpoint).unwrap();
    // --steps 0, and --resume at the step the checkpoint already has: nothing to train.
    for extra in [&["--steps", "0"][..], &["--resume", "--steps", "2"][..]] {
        let output = run("char_rnn", &[&small[..], extra].concat());
        assert_eq!(output.status.code(), Some(0), "{extra:?}: {}", stderr(&output));
        assert_eq!(
            std::fs::read(&checkpoint).unwrap(),
            trained,
            "{extra:?} rewrote the checkpoint"
        );
    }
    // A prime character the text does not have: an error before any step.
    let output = run("char_rnn", &[&small[..], &["--steps", "5", "--prime", "h€"]].concat());
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("--prime"), "{}", stderr(&output));
    assert_eq!(std::fs::read(&checkpoint).unwrap(), trained);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn translate_checks_its_output_folder_and_sizes_before_training() {
    let dir = folder("translate");
    let file = dir.join("a_file");
    std::fs::write(&file, b"").unwrap();
    let output = run("translate", &["--out", file.to_str().unwrap(), "--max-train", "8"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is a file, not a folder"),
        "{}",
        stderr(&output)
    );
    let out = dir.join("out");
    let output = run(
        "translate",
        &[
            "--out",
            out.to_str().unwrap(),
            "--max-train",
            "8",
            "--hidden",
            "100000000",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("max_buffer_size"), "{}", stderr(&output));
    assert!(!out.join("translate.safetensors").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn translate_averages_checkpoints_and_checks_its_recipe_flags() {
    for (args, flag) in [
        (&["--label-smoothing", "1"][..], "--label-smoothing"),
        (&["--label-smoothing", "-0.1"][..], "--label-smoothing"),
        (&["--average", "a.safetensors,b.safetensors"][..], "--average"),
        (&["--decay-start", "1"][..], "--decay-start"),
    ] {
        let output = run("translate", args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(flag), "{args:?}: {}", stderr(&output));
    }
    // A tiny model trained with label smoothing; the mean of it and itself is itself, so
    // both score a small file alike; a checkpoint of another run (other vocabularies) is
    // refused by name.
    let dir = folder("translate-average");
    let tiny = ["--epochs", "1", "--hidden", "16", "--embed", "8", "--beam", "1"];
    let out = dir.join("a");
    let trained = run(
        "translate",
        &[
            &tiny[..],
            &[
                "--max-train",
                "64",
                "--label-smoothing",
                "0.1",
                "--out",
                out.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(trained.status.success(), "{}", stderr(&trained));
    assert!(String::from_utf8_lossy(&trained.stdout).contains("label smoothing 0.1"));
    let pairs = dir.join("pairs.tsv");
    std::fs::write(
        &pairs,
        "I like tea.\t私はお茶が好きです。\nIt is raining.\t雨が降っています。\n",
    )
    .unwrap();
    let checkpoint = out.join("translate.safetensors");
    let score = |extra: &[&str]| {
        let output = run(
            "translate",
            &[&["--eval", pairs.to_str().unwrap(), "--beam", "1"][..], extra].concat(),
        );
        assert!(output.status.success(), "{extra:?}: {}", stderr(&output));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = stdout
            .lines()
            .find(|l| l.contains("chrF"))
            .unwrap_or_default()
            .to_string();
        (line.split(" (").next().unwrap_or_default().to_string(), stdout)
    };
    let (alone, _) = score(&["--checkpoint", checkpoint.to_str().unwrap()]);
    let both = format!("{0},{0}", checkpoint.display());
    let (averaged, stdout) = score(&["--average", &both]);
    assert!(!alone.is_empty() && alone == averaged, "{alone:?} vs {averaged:?}");
    assert!(stdout.contains("the mean of 2 checkpoints"), "{stdout}");
    let other = dir.join("b");
    let trained = run(
        "translate",
        &[&tiny[..], &["--max-train", "48", "--out", other.to_str().unwrap()]].concat(),
    );
    assert!(trained.status.success(), "{}", stderr(&trained));
    let mixed = format!(
        "{},{}",
        checkpoint.display(),
        other.join("translate.safetensors").display()
    );
    let output = run("translate", &["--eval", pairs.to_str().unwrap(), "--average", &mixed]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("other vocabularies"), "{}", stderr(&output));
    std::fs::remove_dir_all(dir).unwrap();
}
