//! What the PBX answers, read by the gateway's own HTTP/1.1 client: heads and bodies (by
//! length, chunked with extensions and trailers, until close) never panic, never yield more
//! body than there were bytes, and decode the same whether they arrive whole or a few bytes
//! at a time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ms365_gateway::edge::decode_upstream_answer;

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else {
        return;
    };
    let whole = decode_upstream_answer(wire, wire.len());
    let pieces = decode_upstream_answer(wire, usize::from(step % 16) + 1);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "split reads decoded differently");
            if let Some((_, body)) = a {
                assert!(body.len() <= wire.len());
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!("whole: {whole:?}, in pieces: {pieces:?}"),
    }
});
