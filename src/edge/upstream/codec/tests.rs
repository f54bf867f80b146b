//! Unit tests of the HTTP/1.1 codec: framing rules, heads split at every byte, chunked
//! bodies fed a byte at a time, and the limits.

use super::*;

fn parse(raw: &[u8], method: &Method) -> Result<Option<ResponseHead>, ProtocolError> {
    parse_response_head(&mut BytesMut::from(raw), method, Pieces::Shared)
}

fn head(raw: &str) -> ResponseHead {
    parse(raw.as_bytes(), &Method::GET)
        .expect("valid head")
        .expect("complete head")
}

fn values(map: &HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn content_length_response_leaves_body_in_buffer() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test:  a b \r\nX-Empty:\r\n\r\nhelloNEXT";
    let mut buf = BytesMut::from(&raw[..]);
    let span = buf.as_ptr_range();
    let head = parse_response_head(&mut buf, &Method::GET, Pieces::Shared)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.framing, Framing::Length(5));
    assert!(head.keep_alive);
    assert_eq!(head.headers["content-length"], "5");
    assert_eq!(head.headers["x-test"], "a b");
    assert_eq!(head.headers["x-empty"], "");
    assert_eq!(head.headers.len(), 3);
    assert_eq!(&buf[..], b"helloNEXT");
    // Shared: the value lives in the read buffer's allocation, not in a copy.
    assert!(span.contains(&head.headers["x-test"].as_bytes().as_ptr()));
    assert!(!buf.try_reclaim(raw.len() - buf.len()));

    // Copied when small: nothing handed on keeps the read buffer alive.
    let mut buf = BytesMut::from(&raw[..]);
    let span = buf.as_ptr_range();
    let copied = parse_response_head(&mut buf, &Method::GET, Pieces::CopiedWhenSmall);
    let copied = copied.unwrap().unwrap();
    assert_eq!(copied.headers, head.headers);
    assert!(!span.contains(&copied.headers["x-test"].as_bytes().as_ptr()));
    assert!(
        buf.try_reclaim(raw.len() - buf.len()),
        "the read buffer is still shared"
    );
}

#[test]
fn small_pieces_are_copied_and_large_ones_shared() {
    let whole = 4 * SHARED_PIECE_MIN;
    let filled = |piece: usize| {
        let mut buf = BytesMut::with_capacity(whole);
        buf.extend_from_slice(&vec![b'a'; piece + 10]);
        buf
    };
    let mut buf = filled(SHARED_PIECE_MIN - 1);
    let span = buf.as_ptr_range();
    let small = Pieces::CopiedWhenSmall.take(&mut buf, SHARED_PIECE_MIN - 1);
    assert!(!span.contains(&small.as_ptr()));
    assert!(
        buf.try_reclaim(whole - 10),
        "a copied piece leaves the buffer whole"
    );

    let mut buf = filled(SHARED_PIECE_MIN);
    let span = buf.as_ptr_range();
    let large = Pieces::CopiedWhenSmall.take(&mut buf, SHARED_PIECE_MIN);
    assert!(
        span.contains(&large.as_ptr()),
        "a large piece is not copied"
    );
    assert!(
        !buf.try_reclaim(whole - 10),
        "the large piece shares the buffer"
    );
    drop(large);
    assert!(buf.try_reclaim(whole - 10));
    assert_eq!((small.len(), buf.len()), (SHARED_PIECE_MIN - 1, 10));
}

#[test]
fn head_split_at_every_byte_waits_until_complete() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: x\r\n\r\nok";
    let head_len = raw.len() - 2;
    let mut buf = BytesMut::new();
    for (i, &byte) in raw[..head_len].iter().enumerate() {
        buf.extend_from_slice(&[byte]);
        let parsed = parse_response_head(&mut buf, &Method::GET, Pieces::Shared).unwrap();
        if i + 1 < head_len {
            assert!(parsed.is_none(), "complete after {} bytes", i + 1);
            assert_eq!(buf.len(), i + 1, "buffer changed at {}", i + 1);
        } else {
            assert_eq!(parsed.unwrap().framing, Framing::Length(2));
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn bodiless_responses_have_no_framing() {
    let with_len = |status: &str| format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
    let raw = with_len("200 OK");
    let h = parse(raw.as_bytes(), &Method::HEAD).unwrap().unwrap();
    assert_eq!((h.framing, h.keep_alive), (Framing::None, true));
    for status in [
        "204 No Content",
        "304 Not Modified",
        "100 Continue",
        "103 Early",
    ] {
        let h = head(&with_len(status));
        assert_eq!((h.framing, h.keep_alive), (Framing::None, true), "{status}");
    }
    let h = head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::None, false));
    let raw = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let h = parse(raw, &Method::CONNECT).unwrap().unwrap();
    assert_eq!((h.framing, h.keep_alive), (Framing::None, false));
}

#[test]
fn transfer_encoding_decides_framing() {
    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
    let h =
        head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
    let err = parse(
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &Method::GET,
    );
    assert!(matches!(err, Err(ProtocolError::TransferEncoding)));
}

#[test]
fn transfer_encoding_overrides_content_length() {
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    assert!(!h.keep_alive);
    assert!(!h.headers.contains_key(CONTENT_LENGTH));
}

#[test]
fn repeated_content_length_must_agree() {
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 7 , 7,7\r\n\r\n",
    ] {
        let h = head(raw);
        assert_eq!(h.framing, Framing::Length(7));
        assert_eq!(values(&h.headers, "content-length"), ["7"]);
    }
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 7, 8\r\n\r\n",
    ] {
        let err = parse(raw.as_bytes(), &Method::GET);
        assert!(matches!(err, Err(ProtocolError::ContentLength)), "{raw:?}");
    }
}

#[test]
fn content_length_must_be_digits() {
    let bad = [
        "+5",
        "-1",
        "5a",
        "0x5",
        "",
        "5,",
        "1 2",
        "18446744073709551616",
    ];
    for value in bad {
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");
        let err = parse(raw.as_bytes(), &Method::GET);
        assert!(
            matches!(err, Err(ProtocolError::ContentLength)),
            "{value:?}"
        );
    }
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(u64::MAX));
}

#[test]
fn connection_close_ends_http11_persistence() {
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), false));
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: foo , CLOSE\r\n\r\n");
    assert!(!h.keep_alive);
    let h =
        head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: te\r\nConnection: Close\r\n\r\n");
    assert!(!h.keep_alive);
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: closed\r\n\r\n");
    assert!(h.keep_alive);
}

#[test]
fn http10_persists_only_with_keep_alive() {
    let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.version, Version::HTTP_10);
    assert!(!h.keep_alive);
    let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(h.keep_alive);
    let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
}

#[test]
fn no_framing_headers_read_until_close() {
    let h = head("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
}

#[test]
fn oversized_head_is_rejected() {
    let mut raw = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    raw.resize(MAX_HEAD_BYTES - 1, b'a');
    assert!(parse(&raw, &Method::GET).unwrap().is_none());
    raw.push(b'a');
    assert!(matches!(
        parse(&raw, &Method::GET),
        Err(ProtocolError::HeadTooLarge)
    ));
    // Complete, but only past the limit.
    raw.extend_from_slice(b"\r\n\r\n");
    assert!(matches!(
        parse(&raw, &Method::GET),
        Err(ProtocolError::HeadTooLarge)
    ));
}

#[test]
fn header_count_is_limited() {
    let build = |count: usize| {
        let fields: String = (0..count).map(|i| format!("X-{i}: v\r\n")).collect();
        format!("HTTP/1.1 204 No Content\r\n{fields}\r\n")
    };
    assert_eq!(head(&build(MAX_HEADERS)).headers.len(), MAX_HEADERS);
    let err = parse(build(MAX_HEADERS + 1).as_bytes(), &Method::GET);
    assert!(matches!(err, Err(ProtocolError::TooManyHeaders)));
}

#[test]
fn multi_valued_headers_keep_their_order() {
    let h = head(
        "HTTP/1.1 204 No Content\r\nSet-Cookie: b=2\r\nVary: x\r\nSet-Cookie: a=1\r\nset-cookie: c=3\r\n\r\n",
    );
    assert_eq!(values(&h.headers, "set-cookie"), ["b=2", "a=1", "c=3"]);
    assert_eq!(values(&h.headers, "vary"), ["x"]);
}

#[test]
fn malformed_status_lines_are_rejected() {
    let err = parse(b"HTTP/2.0 200 OK\r\n\r\n", &Method::GET);
    assert!(matches!(err, Err(ProtocolError::Version)), "{err:?}");
    for raw in [
        &b"HTTP/1.1 099 Low\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ] {
        let err = parse(raw, &Method::GET);
        assert!(matches!(err, Err(ProtocolError::Head(_))), "{err:?}");
    }
}

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.append("host", HeaderValue::from_static("example.com"));
    headers.append("accept", HeaderValue::from_static("a"));
    headers.append("accept", HeaderValue::from_static("b"));
    headers
}

fn encoded(method: Method, headers: &HeaderMap, framing: Framing) -> BytesMut {
    encoded_adding(method, headers, &[], framing)
}

fn encoded_adding(
    method: Method,
    headers: &HeaderMap,
    added: &[&AddedHeaders],
    framing: Framing,
) -> BytesMut {
    let mut dst = BytesMut::from(&b"prev"[..]);
    encode_request_head(&mut dst, &method, "/x?y=1", headers, added, framing);
    dst
}

#[test]
fn request_head_encoding_is_exact() {
    let headers = request_headers();
    let start = "prevGET /x?y=1 HTTP/1.1\r\nhost: example.com\r\naccept: a\r\naccept: b\r\n";
    let cases = [
        (Framing::Length(12), "content-length: 12\r\n\r\n"),
        (Framing::Length(0), "content-length: 0\r\n\r\n"),
        (Framing::Chunked, "transfer-encoding: chunked\r\n\r\n"),
        (Framing::None, "\r\n"),
        (Framing::Close, "\r\n"),
    ];
    for (framing, end) in cases {
        let dst = encoded(Method::GET, &headers, framing);
        assert_eq!(dst, format!("{start}{end}").as_bytes(), "{framing:?}");
    }
    let mut with_len = headers;
    with_len.insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
    let dst = encoded(Method::POST, &with_len, Framing::Length(3));
    let want = "prevPOST /x?y=1 HTTP/1.1\r\nhost: example.com\r\naccept: a\r\naccept: b\r\n\
                content-length: 3\r\n\r\n";
    assert_eq!(dst, want.as_bytes());
}

/// Added lines go after the request's own fields and before the framing line.
#[test]
fn added_lines_come_after_the_fields_and_before_the_framing() {
    let block = |name: &'static str, value: &str| {
        let mut lines = AddedHeaders::builder(0);
        lines.push(&HeaderName::from_static(name), value);
        lines.build()
    };
    let (one, two) = (
        block("x-forwarded-for", "192.0.2.1"),
        block("x-pbx-user", "u1"),
    );
    let dst = encoded_adding(
        Method::POST,
        &request_headers(),
        &[&one, &two],
        Framing::Length(2),
    );
    let want = "prevPOST /x?y=1 HTTP/1.1\r\nhost: example.com\r\naccept: a\r\naccept: b\r\n\
                x-forwarded-for: 192.0.2.1\r\nx-pbx-user: u1\r\ncontent-length: 2\r\n\r\n";
    assert_eq!(dst, want.as_bytes());
}

#[test]
fn chunk_size_lines_are_lowercase_hex() {
    let mut dst = BytesMut::new();
    encode_chunk_size(&mut dst, 0x1a2b);
    encode_chunk_size(&mut dst, 0);
    encode_chunk_size(&mut dst, usize::MAX);
    assert_eq!(dst, format!("1a2b\r\n0\r\n{:x}\r\n", usize::MAX).as_bytes());
    assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
}

const BODY: &[u8] = b"4;name=value\r\nWiki\r\n5 ;a=\"q\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n\
    000;last\r\nExpires: never\r\nX-Sum: abc\r\nX-Sum: def\r\n\r\nNEXT";

/// Feeds `input` `step` bytes at a time and returns the data, the end and what is left.
fn decode_in_steps(input: &[u8], step: usize) -> (Vec<u8>, Option<HeaderMap>, BytesMut) {
    let mut decoder = ChunkedDecoder::new();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut feed = input.chunks(step);
    loop {
        match decoder.decode(&mut buf).expect("valid body") {
            Chunk::Data(bytes) => {
                assert!(!bytes.is_empty(), "empty data chunk");
                data.extend_from_slice(&bytes);
            }
            Chunk::End(trailers) => return (data, trailers, buf),
            Chunk::Incomplete => buf.extend_from_slice(feed.next().expect("body ended early")),
        }
    }
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let (data, trailers, rest) = decode_in_steps(BODY, BODY.len());
    assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.");
    let trailers = trailers.expect("trailers");
    assert_eq!(values(&trailers, "expires"), ["never"]);
    assert_eq!(values(&trailers, "x-sum"), ["abc", "def"]);
    assert_eq!(trailers.len(), 3);
    assert_eq!(&rest[..], b"NEXT");
}

#[test]
fn chunked_body_fed_byte_by_byte_decodes_the_same() {
    let whole = decode_in_steps(BODY, BODY.len());
    for step in [1, 2, 3, 7] {
        let (data, trailers, _) = decode_in_steps(BODY, step);
        assert_eq!(data, whole.0, "step {step}");
        assert_eq!(trailers, whole.1, "step {step}");
    }
}

#[test]
fn chunked_body_without_trailers_ends_with_none() {
    let input = b"3\r\nabc\r\n0\r\n\r\nHTTP";
    let (data, trailers, rest) = decode_in_steps(input, input.len());
    assert_eq!(data, b"abc");
    assert_eq!(trailers, None);
    assert_eq!(&rest[..], b"HTTP");
    assert_eq!(decode_in_steps(input, 1).0, b"abc");
    let (data, trailers, rest) = decode_in_steps(b"0000000000000000000003\r\nabc\r\n0\r\n\r\n", 64);
    assert_eq!((data, trailers, rest.len()), (b"abc".to_vec(), None, 0));
}

fn decode_error(input: &[u8]) -> ProtocolError {
    let mut decoder = ChunkedDecoder::new();
    let mut buf = BytesMut::from(input);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Chunk::Data(_)) => {}
            Ok(other) => panic!("{:?} gave {other:?}", String::from_utf8_lossy(input)),
            Err(err) => return err,
        }
    }
}

#[test]
fn bad_size_lines_are_rejected() {
    let bad: [&[u8]; 7] = [
        b"xyz\r\n",
        b";ext\r\n",
        b"\r\n",
        b"5\n",
        b"5 x\r\n",
        b"5;a\rb\r\n",
        b"-5\r\n",
    ];
    for input in bad {
        let err = decode_error(input);
        assert!(
            matches!(err, ProtocolError::ChunkSize),
            "{input:?}: {err:?}"
        );
    }
}

#[test]
fn size_overflow_is_rejected() {
    let err = decode_error(b"10000000000000000\r\n");
    assert!(matches!(err, ProtocolError::ChunkSize));
    let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
    let chunk = ChunkedDecoder::new().decode(&mut buf).unwrap();
    assert_eq!(chunk, Chunk::Data(Bytes::from_static(b"ab")));
}

#[test]
fn chunk_data_must_end_with_crlf() {
    for input in [&b"3\r\nabcX\r\n"[..], b"3\r\nabc\rX", b"3\r\nabc\n"] {
        let err = decode_error(input);
        assert!(matches!(err, ProtocolError::ChunkEnd), "{input:?}: {err:?}");
    }
    // A lone CR might still be followed by LF.
    let mut buf = BytesMut::from(&b"3\r\nabc\r"[..]);
    let mut decoder = ChunkedDecoder::new();
    assert!(matches!(decoder.decode(&mut buf), Ok(Chunk::Data(_))));
    assert_eq!(decoder.decode(&mut buf).unwrap(), Chunk::Incomplete);
}

#[test]
fn oversized_size_line_is_rejected() {
    let mut line = b"1;".to_vec();
    line.resize(MAX_CHUNK_LINE, b'a');
    let mut buf = BytesMut::from(&line[..]);
    let mut decoder = ChunkedDecoder::new();
    buf.extend_from_slice(b"\r");
    assert_eq!(decoder.decode(&mut buf).unwrap(), Chunk::Incomplete);
    buf.extend_from_slice(b"\nx");
    assert_eq!(decoder.decode(&mut buf).unwrap(), Chunk::Data("x".into()));
    line.extend_from_slice(b"aa");
    let err = decode_error(&line);
    assert!(matches!(err, ProtocolError::ChunkLineTooLong), "{err:?}");
}

#[test]
fn oversized_trailers_are_rejected() {
    let mut input = b"0\r\nX-Big: ".to_vec();
    input.resize(MAX_TRAILER_BYTES - 1, b'a');
    let mut buf = BytesMut::from(&input[..]);
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(decoder.decode(&mut buf).unwrap(), Chunk::Incomplete);
    buf.extend_from_slice(b"aaaa");
    let err = decoder.decode(&mut buf).unwrap_err();
    assert!(matches!(err, ProtocolError::TrailersTooLarge), "{err:?}");
    let err = decode_error(b"0\r\nBad Name: x\r\n\r\n");
    assert!(matches!(err, ProtocolError::Trailers), "{err:?}");
}

#[test]
fn end_is_sticky() {
    let mut buf = BytesMut::from(&b"0\r\nA: b\r\n\r\nHTTP/1.1"[..]);
    let span = buf.as_ptr_range();
    let mut decoder = ChunkedDecoder::new();
    let Ok(Chunk::End(Some(trailers))) = decoder.decode(&mut buf) else {
        panic!("expected trailers");
    };
    // Trailer values share the read buffer too.
    assert!(span.contains(&trailers["a"].as_bytes().as_ptr()));
    for _ in 0..2 {
        assert_eq!(decoder.decode(&mut buf).unwrap(), Chunk::End(None));
        assert_eq!(&buf[..], b"HTTP/1.1");
    }
}

#[test]
fn decode_answer_gives_the_same_body_however_the_bytes_are_split() {
    let answers: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nt: 1\r\n\r\n",
        b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nwxyzEXTRA",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    ];
    let bodies: [&[u8]; 3] = [b"abcde", b"wxyz", b"until close"];
    for (wire, body) in answers.iter().zip(bodies) {
        for step in 1..=wire.len() {
            let (_, got) = decode_answer(wire, step).unwrap().expect("a complete head");
            assert_eq!(got, body, "step {step}");
        }
    }
    assert!(decode_answer(b"HTTP/1.1 200 OK\r\n", 3).unwrap().is_none());
    assert!(
        decode_answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            2
        )
        .is_err()
    );
}

#[test]
fn a_copying_decoder_hands_on_data_and_trailers_of_their_own() {
    let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\nA: b\r\n\r\n"[..]);
    let span = buf.as_ptr_range();
    let mut decoder = ChunkedDecoder::taking(Pieces::CopiedWhenSmall);
    let Chunk::Data(data) = decoder.decode(&mut buf).unwrap() else {
        panic!("expected data");
    };
    assert_eq!(data, "hello");
    assert!(!span.contains(&data.as_ptr()));
    let Ok(Chunk::End(Some(trailers))) = decoder.decode(&mut buf) else {
        panic!("expected trailers");
    };
    assert_eq!(trailers["a"], "b");
    assert!(!span.contains(&trailers["a"].as_bytes().as_ptr()));
    assert!(buf.is_empty());
}
