//! Reading parallel TSV files, tokenisers, vocabularies and padded, length-bucketed
//! seq2seq batches (host-side, no GPU).

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::text::{
    bucketed_batches, char_tokens, parse_tsv, read_tsv, word_tokens, Example, Seq2SeqBatch, Vocab, WordVectors,
};
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

#[test]
fn text_glove_reads_vectors_and_builds_a_table_for_a_vocabulary() {
    let file = b"the 0.5 -1 2\n, 0 0 0\r\nfilm 1e-1 0.25 -0.75\nthe 9 9 9\n\n";
    let glove = WordVectors::parse_glove("tiny.txt", file).expect("valid GloVe text");
    assert_eq!((glove.len(), glove.dim()), (3, 3));
    assert_eq!(glove.words(), strings(&["the", ",", "film"]));
    // A repeated word keeps its first vector.
    assert_eq!(glove.get("the"), Some(&[0.5, -1.0, 2.0][..]));
    assert_eq!(glove.get("film"), Some(&[0.1, 0.25, -0.75][..]));
    assert_eq!(glove.get("movie"), None);

    let vocab = Vocab::build([strings(&["film", "movie", "film"])].iter(), 1);
    let (table, found) = glove.embedding_table(&vocab, || 7.0);
    assert_eq!((table.len(), found), (vocab.len() * 3, 1));
    let row = |token: &str| {
        let id = vocab.id(token) as usize;
        table[id * 3..id * 3 + 3].to_vec()
    };
    assert_eq!(row("film"), [0.1, 0.25, -0.75]);
    assert_eq!(row("movie"), [7.0; 3]);
    assert_eq!(row("<pad>"), [7.0; 3]);
}

#[test]
fn text_glove_names_the_malformed_line() {
    for (bytes, needle) in [
        (&b"a 1 2\nb 1\n"[..], "line 2: \"b\" has 1 values, the first line had 2"),
        (&b"a 1 2\nb 1 x\n"[..], "line 2: value 2 of \"b\" is \"x\""),
        (&b"a 1 nan\n"[..], "line 1: value 2 of \"a\""),
        (&b"a\n"[..], "line 1: \"a\" has no values"),
        (&b"a 1\n 1\n"[..], "line 2: starts with a space"),
        (&b"a 1\nb \xff\n"[..], "line 2: not UTF-8"),
        (&b"\n\n"[..], "no word vectors"),
    ] {
        let err = WordVectors::parse_glove("v.txt", bytes).expect_err("malformed");
        let message = err.to_string();
        assert!(matches!(err, Error::Format { .. }), "{message}");
        assert!(
            message.starts_with("v.txt: ") && message.contains(needle),
            "{message:?} lacks {needle:?}"
        );
    }
    let missing = WordVectors::read_glove(std::path::Path::new("/no/such/glove.txt")).expect_err("missing");
    assert!(missing.to_string().contains("/no/such/glove.txt"), "{missing}");
}

#[test]
fn text_a_utf8_byte_order_mark_is_not_part_of_the_first_line() {
    let pairs = tsumugi::text::parse_tsv("bom.tsv", "\u{feff}hello\tこんにちは\n".as_bytes()).unwrap();
    assert_eq!(pairs[0].source, "hello");
    let vocab = tsumugi::text::Vocab::from_text("bom.vocab", "\u{feff}<pad>\n<sos>\n<eos>\n<unk>\nhello\n").unwrap();
    assert_eq!(vocab.token(0), "<pad>");
    let vectors = tsumugi::text::WordVectors::parse_glove("bom.txt", "\u{feff}the 0.5 1.0\n".as_bytes()).unwrap();
    assert_eq!(vectors.words(), ["the"]);
}
