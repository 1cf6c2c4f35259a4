//! Replays every saved fuzz input (fuzz/corpus: the seeds; fuzz/regressions: every crash a fuzzer
//! found, kept as a regression test) through the invariants of `sluice::http::check`.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(dir)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(data) = std::fs::read(entry.path()) {
                check(&data);
                n += 1;
            }
        }
    }
    n
}

#[test]
fn request_head_corpus_holds_the_invariants() {
    assert!(replay("request_head", sluice::http::check::request_head) >= 4);
}

#[test]
fn response_head_corpus_holds_the_invariants() {
    assert!(replay("response_head", sluice::http::check::response_head) >= 4);
}

#[test]
fn chunked_corpus_holds_the_invariants() {
    assert!(replay("chunked", sluice::http::check::chunked) >= 2);
}
