//! What the examples' `main` functions share: parse the flags, print the help, run, and
//! turn a bad flag or a failed run into a message and an exit code instead of a panic.

use std::fmt::Display;

/// Parses with `parse` (`Ok(None)`: `--help` was asked for, so `help` is printed), then
/// runs. Exits with 2 and the message for bad flags, 1 and the error for a failed run.
pub fn run_main<A, P: Display, E: Display>(
    help: &str,
    parse: impl FnOnce() -> Result<Option<A>, P>,
    run: impl FnOnce(&A) -> Result<(), E>,
) {
    quiet_on_closed_stdout();
    let args = match parse() {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{help}");
            return;
        }
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = run(&args) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

/// Rust ignores SIGPIPE, so `println!` panics ("failed printing to stdout: Broken pipe")
/// when the reader of the output has gone, as in `translate --eval FILE | head -1`; such a
/// program has nothing left to do, so it ends quietly, as command-line tools do.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

/// The value after `flag` parsed as `T`, or a message naming the flag.
pub fn value<T: std::str::FromStr>(flag: &str, raw: Option<String>) -> Result<T, Box<dyn std::error::Error>> {
    let raw = raw.ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
    raw.parse()
        .map_err(|_| format!("{flag}: cannot parse {raw:?} (see --help)").into())
}

/// [`value`] for a whole number that must be at least 1.
// Not every example that includes this module takes a count.
#[allow(dead_code)]
pub fn positive(flag: &str, raw: Option<String>) -> Result<usize, Box<dyn std::error::Error>> {
    let n: usize = value(flag, raw)?;
    if n == 0 {
        return Err(format!("{flag}: must be at least 1 (see --help)").into());
    }
    Ok(n)
}
