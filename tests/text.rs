//! Reading parallel TSV files, tokenisers, vocabularies and padded, length-bucketed
//! seq2seq batches (host-side, no GPU).

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::text::{bucketed_batches, char_tokens, parse_tsv, read_tsv, word_tokens, Example, Seq2SeqBatch, Vocab};
use tsumugi::Error;

fn strings(tokens: &[&str]) -> Vec<String> {
    tokens.iter().map(|s| s.to_string()).collect()
}

#[test]
fn text_word_tokens_lower_case_and_split_punctuation_like_pythons_regex() {
    // re.findall(r"\w+|[^\w\s]", s.lower())
    assert_eq!(
        word_tokens("Our teacher said to us, \"Don't leave the room.\""),
        strings(&["our", "teacher", "said", "to", "us", ",", "\"", "don", "'", "t", "leave", "the", "room", ".", "\""])
    );
    assert_eq!(word_tokens("  "), Vec::<String>::new());
    assert_eq!(
        word_tokens("Tom's 2nd car!"),
        strings(&["tom", "'", "s", "2nd", "car", "!"])
    );
}

#[test]
fn text_char_tokens_are_characters_without_spaces() {
    assert_eq!(char_tokens("彼は 学生。"), strings(&["彼", "は", "学", "生", "。"]));
}

#[test]
fn text_tsv_reads_pairs_and_names_the_bad_line() {
    let pairs = parse_tsv("mem", b"Hi there.\t\xe3\x81\x93\xe3\x82\x93\t1_2\r\n\nBye.\tb\n").unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(
        (pairs[0].source.as_str(), pairs[0].target.as_str(), pairs[0].line),
        ("Hi there.", "こん", 1)
    );
    assert_eq!((pairs[1].source.as_str(), pairs[1].line), ("Bye.", 3));
    let err = parse_tsv("mem", b"a\tb\nno tab here\n").unwrap_err();
    assert!(
        matches!(&err, Error::Format { .. }) && err.to_string().contains("line 2"),
        "{err}"
    );
    let err = parse_tsv("mem", b"a\tb\nc\t\xff\n").unwrap_err();
    assert!(err.to_string().contains("line 2 is not UTF-8"), "{err}");
    let err = read_tsv(std::path::Path::new("/no/such/file.tsv")).unwrap_err();
    assert!(
        matches!(err, Error::Io(_)) && err.to_string().contains("/no/such/file.tsv"),
        "{err}"
    );
}

#[test]
fn text_vocab_puts_specials_first_then_tokens_by_frequency_and_round_trips() {
    let sentences = vec![strings(&["b", "a", "b"]), strings(&["c", "a", "b"])];
    let vocab = Vocab::build(&sentences, 1);
    let tokens: Vec<&str> = (0..vocab.len() as u32).map(|i| vocab.token(i)).collect();
    assert_eq!(tokens, ["<pad>", "<sos>", "<eos>", "<unk>", "b", "a", "c"]);
    assert_eq!(Vocab::build(&sentences, 2).len(), 6);
    assert_eq!(vocab.id("zzz"), Vocab::UNK_ID);
    assert_eq!(vocab.decode(&[4, 5, 3, 2, 6]), ["b", "a", "<unk>"]);
    let path = std::env::temp_dir().join(format!("tsumugi-vocab-{}.txt", std::process::id()));
    vocab.save(&path).unwrap();
    assert_eq!(Vocab::load(&path).unwrap(), vocab);
    std::fs::remove_file(&path).unwrap();
    assert!(Vocab::from_text("bad", "a\nb\n").is_err());
}

#[test]
fn text_seq2seq_batch_pads_sources_and_lays_labels_out_time_major() {
    let a = Example {
        source: vec![5, 6, 2],
        target: vec![7],
    };
    let b = Example {
        source: vec![8, 2],
        target: vec![9, 10],
    };
    let batch = Seq2SeqBatch::new(&[&a, &b]).unwrap();
    assert_eq!((batch.batch, batch.source_steps, batch.target_steps), (2, 3, 3));
    assert_eq!(batch.source, [5, 6, 2, 8, 2, 0]);
    assert_eq!(batch.source_lengths, [3, 2]);
    assert_eq!(batch.decoder_inputs, [vec![1, 1], vec![7, 9], vec![0, 10]]);
    // (t, b): t0 = (7, 9), t1 = (<eos>, 10), t2 = (<pad>, <eos>)
    assert_eq!(batch.labels, [7, 9, 2, 10, 0, 2]);
    assert_eq!(batch.target_tokens, 5);
    assert!(Seq2SeqBatch::new(&[]).is_err());
}

#[test]
fn text_bucketed_batches_cover_every_example_once_and_group_similar_lengths() {
    let examples: Vec<Example> = (0..100)
        .map(|i| Example {
            source: vec![4; 1 + i % 7],
            target: vec![5; 1 + (i * 37) % 20],
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(1);
    let batches = bucketed_batches(&examples, 16, &mut rng).unwrap();
    let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
    seen.sort();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    for batch in &batches {
        let lens: Vec<usize> = batch.iter().map(|&i| examples[i].target.len()).collect();
        let spread = lens.iter().max().unwrap() - lens.iter().min().unwrap();
        assert!(spread <= 4, "{lens:?}");
    }
    assert!(bucketed_batches(&examples, 0, &mut rng).is_err());
}
