//! The chapter, listing by listing, on tsumugi: every listing of the RNN/LSTM/GRU,
//! seq2seq, attention and embedding chapter (sections 2.1 to 2.5 and exercises 2, 4 and
//! 5) with the chapter's own data, sizes and hyper-parameters, printing what the chapter
//! prints with the values this run gives. The chapter's printed numbers were
//! illustrative; where one is not what PyTorch gives (a parameter count, a vocabulary
//! size), the true number is printed with a note. Plots go to PNG files.
//!
//! ```sh
//! cargo run --release --example chapter            # the whole walk, in order
//! cargo run --release --example chapter -- 2.3     # one section
//! cargo run --release --example chapter -- --list  # the sections
//! ```

#[path = "../cli/mod.rs"]
mod cli;
mod common;
mod data;
mod exercises;
mod plot;
mod s2_1;
mod s2_2;
mod s2_3;
mod s2_4;
mod s2_5;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{AnyResult, Walk};

const HELP: &str = "\
chapter: every listing of the chapter on tsumugi, with the chapter's data and settings

USAGE: cargo run --release --example chapter -- [SECTION...] [FLAGS]

  SECTION          2.1, 2.2, 2.3, 2.4, 2.5, ex2, ex4 or ex5 (default: all, in order)
  --list           list the sections and what each runs
  --out DIR        where the PNGs go              [default: target/chapter]
  --font FILE      a .ttf/.otf/.ttc font with Japanese glyphs for the PNGs' text
                   [default: the first of the usual Debian paths that exists,
                   e.g. fonts-ipafont-gothic's ipag.ttf]
  -h, --help       this text
";

/// A section: its name, what it runs, and the function that runs it.
struct Section {
    name: &'static str,
    what: &'static str,
    run: fn(&mut Walk) -> AnyResult<()>,
}

const SECTIONS: [Section; 8] = [
    Section {
        name: "2.1",
        what: "SimpleRNN on random input; CharRNN trained on \"hello world\", then generating",
        run: s2_1::run,
    },
    Section {
        name: "2.2",
        what: "SentimentLSTM on the 8 reviews and the test sentences; TextClassifierGRU; LSTM vs GRU parameters and 100-run inference time",
        run: s2_2::run,
    },
    Section {
        name: "2.3",
        what: "Encoder/Decoder/Seq2Seq counts and shapes; the 4-sentence English-to-Japanese toy, 500 epochs, greedy translations",
        run: s2_3::run,
    },
    Section {
        name: "2.4",
        what: "BahdanauAttention, AttentionDecoder, Seq2SeqWithAttention; visualize_attention heat maps (PNG)",
        run: s2_4::run,
    },
    Section {
        name: "2.5",
        what: "the Embedding layer; pretrained embeddings frozen and fine-tuned; CharLevelRNN",
        run: s2_5::run,
    },
    Section {
        name: "ex2",
        what: "exercise 2: SimpleLSTM (vocab 50, embed 32, hidden 64, 3 classes)",
        run: exercises::ex2,
    },
    Section {
        name: "ex4",
        what: "exercise 4: Bahdanau attention test, weights summing to 1, bar chart and heat map (PNG)",
        run: exercises::ex4,
    },
    Section {
        name: "ex5",
        what: "exercise 5: random vs pretrained-frozen vs pretrained-fine-tuned embeddings, loss curves and accuracy bars (PNG)",
        run: exercises::ex5,
    },
];

struct Args {
    sections: Vec<&'static Section>,
    list: bool,
    out: PathBuf,
    font: Option<PathBuf>,
}

fn parse() -> AnyResult<Option<Args>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = Args {
        sections: Vec::new(),
        list: false,
        out: root.join("target/chapter"),
        font: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--list" => args.list = true,
            "--out" => args.out = cli::value(&arg, it.next())?,
            "--font" => args.font = Some(cli::value(&arg, it.next())?),
            name => {
                let wanted = name.trim_start_matches("exercise").trim_start_matches('-');
                let section = SECTIONS
                    .iter()
                    .find(|s| s.name == wanted || s.name == format!("ex{wanted}"))
                    .ok_or_else(|| {
                        let names: Vec<&str> = SECTIONS.iter().map(|s| s.name).collect();
                        format!("unknown section or flag {name:?}: sections are {}", names.join(", "))
                    })?;
                args.sections.push(section);
            }
        }
    }
    if args.sections.is_empty() {
        args.sections = SECTIONS.iter().collect();
    }
    Ok(Some(args))
}

fn main() {
    cli::run_main(HELP, parse, run);
}

fn run(args: &Args) -> AnyResult<()> {
    if args.list {
        for s in &SECTIONS {
            println!("{:<4} {}", s.name, s.what);
        }
        return Ok(());
    }
    let start = Instant::now();
    let mut walk = Walk::new(&args.out, args.font.clone())?;
    println!("adapter: {}", walk.ctx.adapter());
    let mut times = Vec::new();
    for section in &args.sections {
        println!("\n======== {} {} ========", section.name, section.what);
        let section_start = Instant::now();
        (section.run)(&mut walk).map_err(|err| format!("section {}: {err}", section.name))?;
        let seconds = section_start.elapsed().as_secs_f64();
        println!("[{} took {seconds:.1} s]", section.name);
        times.push((section.name, seconds));
    }
    if times.len() > 1 {
        let each: Vec<String> = times.iter().map(|(n, s)| format!("{n} {s:.0} s")).collect();
        println!(
            "\nthe walk took {:.0} s ({})",
            start.elapsed().as_secs_f64(),
            each.join(", ")
        );
    }
    if !walk.pngs.is_empty() {
        println!("PNGs written:");
        for png in &walk.pngs {
            println!("  {}", png.display());
        }
    }
    Ok(())
}
