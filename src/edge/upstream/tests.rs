//! The client against a scripted upstream on a real socket: every answer is written byte for
//! byte by the test, so keep-alive, framing, faults and the pool are seen as the wire has them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Answer, ClientError, Endpoint, Origin, Pieces};

/// What the scripted upstream does after writing an answer.
#[derive(Clone, Copy, PartialEq)]
enum After {
    KeepOpen,
    Close,
    /// Read the request, then close without answering.
    Hang,
}

/// An upstream that answers each request with the next scripted bytes and reports every
/// request it read, whole, on `requests`.
struct Scripted {
    origin: Arc<Origin>,
    accepted: Arc<AtomicUsize>,
    requests: mpsc::UnboundedReceiver<String>,
}

async fn scripted(answers: Vec<(&'static [u8], After)>) -> Scripted {
    scripted_with_idle(answers, Duration::from_secs(60)).await
}

async fn scripted_with_idle(answers: Vec<(&'static [u8], After)>, idle: Duration) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, requests) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer_requests(socket, answers.clone(), tx.clone()));
        }
    });
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    let endpoint = Endpoint::new(&uri, &no_roots(), Duration::from_secs(2)).unwrap();
    let origin = Arc::new(Origin::new(endpoint, 1, 8, idle));
    Scripted {
        origin,
        accepted,
        requests,
    }
}

fn no_roots() -> Arc<rustls::ClientConfig> {
    let tls = rustls::ClientConfig::builder_with_provider(crate::edge::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(tls)
}

type Script = Arc<Mutex<VecDeque<(&'static [u8], After)>>>;

async fn answer_requests(
    mut socket: TcpStream,
    answers: Script,
    requests: mpsc::UnboundedSender<String>,
) {
    loop {
        let Some(request) = read_request(&mut socket).await else {
            return;
        };
        let _ = requests.send(request);
        let next = answers.lock().unwrap().pop_front();
        let Some((bytes, after)) = next else { return };
        if after == After::Hang {
            return;
        }
        if socket.write_all(bytes).await.is_err() || after == After::Close {
            return;
        }
    }
}

/// A request's head and body (by content-length, or chunked up to its last chunk).
async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    let complete = |seen: &[u8]| -> Option<bool> {
        let text = String::from_utf8_lossy(seen).to_ascii_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            return Some(false);
        };
        let body = &text[end + 4..];
        if let Some(at) = text.find("content-length: ") {
            let n: usize = text[at + 16..].split("\r\n").next()?.parse().ok()?;
            return Some(body.len() >= n);
        }
        Some(!text.contains("transfer-encoding: chunked") || body.ends_with("0\r\n\r\n"))
    };
    loop {
        match socket.read(&mut byte).await {
            Ok(1) => seen.push(byte[0]),
            _ => return None,
        }
        if complete(&seen) == Some(true) {
            return Some(String::from_utf8_lossy(&seen).into_owned());
        }
    }
}

fn get(path: &str) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.uri = path.parse().unwrap();
    parts.headers.insert("host", "pbx.test".parse().unwrap());
    parts
}

/// A GET of `path` whose answer's pieces are shared, as for an HTTP/1.1 client.
async fn send_get(origin: &Arc<Origin>, path: &str) -> Result<Answer, ClientError> {
    origin
        .send(&get(path), &[], Body::empty(), Pieces::Shared)
        .await
}

async fn body_of(answer: Answer) -> Bytes {
    answer
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
}

const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

#[tokio::test]
async fn a_kept_connection_carries_the_next_request() {
    let mut up = scripted(vec![(HELLO, After::KeepOpen), (HELLO, After::KeepOpen)]).await;
    for _ in 0..2 {
        let answer = send_get(&up.origin, "/a?b=c").await.unwrap();
        assert_eq!(answer.response.status(), StatusCode::OK);
        assert_eq!(body_of(answer).await, "hello");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(up.origin.idle_count(), 1);
    let first = up.requests.recv().await.unwrap();
    assert!(first.starts_with("GET /a?b=c HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("host: pbx.test\r\n"), "{first}");
}

#[tokio::test]
async fn a_body_left_unread_closes_its_connection() {
    let long: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part";
    let up = scripted(vec![(long, After::KeepOpen), (HELLO, After::KeepOpen)]).await;
    let answer = send_get(&up.origin, "/").await.unwrap();
    drop(answer);
    assert_eq!(up.origin.idle_count(), 0);
    let answer = send_get(&up.origin, "/").await.unwrap();
    assert_eq!(body_of(answer).await, "hello");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_idle_past_the_timeout_are_swept_and_not_reused() {
    let answers = vec![(HELLO, After::KeepOpen); 3];
    let up = scripted_with_idle(answers, Duration::ZERO).await;
    body_of(send_get(&up.origin, "/").await.unwrap()).await;
    assert_eq!((up.origin.idle_count(), up.origin.sweep()), (1, 1));
    assert_eq!(up.origin.idle_count(), 0);
    body_of(send_get(&up.origin, "/").await.unwrap()).await;
    body_of(send_get(&up.origin, "/").await.unwrap()).await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_kept_connection_the_upstream_closed_is_replaced_for_a_request_without_body() {
    let up = scripted(vec![(HELLO, After::Close), (HELLO, After::KeepOpen)]).await;
    let answer = send_get(&up.origin, "/").await.unwrap();
    assert_eq!(body_of(answer).await, "hello");
    // The answer said keep-alive, so the connection was kept; the upstream closed it anyway.
    assert_eq!(up.origin.idle_count(), 1);
    let answer = send_get(&up.origin, "/").await.unwrap();
    assert_eq!(body_of(answer).await, "hello");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn chunked_answers_with_trailers_and_close_delimited_answers_are_read_whole() {
    let chunked: &'static [u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";
    let close: &'static [u8] = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
    let request = get("/");
    for pieces in [Pieces::Shared, Pieces::CopiedWhenSmall] {
        let up = scripted(vec![(chunked, After::KeepOpen), (close, After::Close)]).await;
        let answer = up.origin.send(&request, &[], Body::empty(), pieces);
        let collected = answer.await.unwrap().response.into_body().collect();
        let collected = collected.await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "11");
        assert_eq!(collected.to_bytes(), "hello world");
        let kept = up.origin.idle_count();
        assert_eq!(
            kept, 1,
            "a chunked answer keeps its connection ({pieces:?})"
        );
        let answer = up.origin.send(&request, &[], Body::empty(), pieces);
        assert_eq!(body_of(answer.await.unwrap()).await, "until the end");
        let kept = up.origin.idle_count();
        assert_eq!(
            kept, 0,
            "a close-delimited answer ends its connection ({pieces:?})"
        );
    }
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_chunked_and_a_known_one_with_its_length() {
    let mut up = scripted(vec![(HELLO, After::KeepOpen), (HELLO, After::KeepOpen)]).await;
    let pieces = ["abc", "", "defg"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s)));
    let mut post = get("/upload");
    post.method = Method::POST;
    let streamed = Body::from_stream(futures_util::stream::iter(pieces));
    body_of(
        up.origin
            .send(&post, &[], streamed, Pieces::Shared)
            .await
            .unwrap(),
    )
    .await;
    let request = up.requests.recv().await.unwrap();
    assert!(
        request.starts_with("POST /upload HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.ends_with("transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"),
        "{request}"
    );
    post.headers.insert("content-length", "3".parse().unwrap());
    body_of(
        up.origin
            .send(&post, &[], Body::from("xyz"), Pieces::Shared)
            .await
            .unwrap(),
    )
    .await;
    let request = up.requests.recv().await.unwrap();
    assert!(
        request.ends_with("content-length: 3\r\n\r\nxyz"),
        "{request}"
    );
    assert!(!request.contains("transfer-encoding"), "{request}");
}

#[tokio::test]
async fn an_answer_cut_short_fails_and_its_connection_is_not_kept() {
    let cut: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
    let up = scripted(vec![(cut, After::Close)]).await;
    let answer = send_get(&up.origin, "/").await.unwrap();
    let error = answer.response.into_body().collect().await.unwrap_err();
    assert!(matches!(error, ClientError::ClosedEarly), "{error:?}");
    assert_eq!(up.origin.idle_count(), 0);
}

#[tokio::test]
async fn informational_answers_are_skipped_and_garbage_is_a_protocol_error() {
    let early_hints: &'static [u8] =
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    let garbage: &'static [u8] = b"SSH-2.0-OpenSSH_9.6\r\n\r\n";
    let up = scripted(vec![
        (early_hints, After::KeepOpen),
        (garbage, After::Close),
    ])
    .await;
    let answer = send_get(&up.origin, "/").await.unwrap();
    assert_eq!(answer.response.status(), StatusCode::NO_CONTENT);
    assert!(answer.response.headers().get("link").is_none());
    let Err(error) = send_get(&up.origin, "/").await else {
        panic!("garbage was taken for an answer");
    };
    assert!(matches!(error, ClientError::Protocol(_)), "{error:?}");
}

#[tokio::test]
async fn a_switch_of_protocols_hands_over_the_connection_with_its_early_bytes() {
    let switch: &'static [u8] =
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nearly";
    let up = scripted(vec![(switch, After::KeepOpen)]).await;
    let answer = send_get(&up.origin, "/ws").await.unwrap();
    assert_eq!(answer.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut upgraded = answer.upgraded.expect("the connection after 101");
    let mut early = [0u8; 5];
    upgraded.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"early");
    assert_eq!(up.origin.idle_count(), 0);
}

#[tokio::test]
async fn nobody_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    let endpoint = Endpoint::new(&uri, &no_roots(), Duration::from_secs(2)).unwrap();
    let origin = Arc::new(Origin::new(endpoint, 1, 8, Duration::from_secs(60)));
    let Err(error) = send_get(&origin, "/").await else {
        panic!("a closed port answered");
    };
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn only_an_idempotent_request_goes_again_when_a_kept_connection_closes_unanswered() {
    let script = vec![
        (HELLO, After::KeepOpen),
        (HELLO, After::Hang),
        (HELLO, After::KeepOpen),
    ];
    let up = scripted(script).await;
    body_of(send_get(&up.origin, "/").await.unwrap()).await;
    let answer = send_get(&up.origin, "/again").await.unwrap();
    assert_eq!(body_of(answer).await, "hello");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);

    let up = scripted(vec![(HELLO, After::KeepOpen), (HELLO, After::Hang)]).await;
    body_of(send_get(&up.origin, "/").await.unwrap()).await;
    let mut notify = get("/event");
    notify.method = Method::from_bytes(b"NOTIFY").unwrap();
    let Err(error) = up
        .origin
        .send(&notify, &[], Body::empty(), Pieces::Shared)
        .await
    else {
        panic!("a request that is not idempotent was sent again");
    };
    assert!(matches!(error, ClientError::NoAnswer(_)), "{error:?}");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_sent_before_the_whole_body_reaches_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1 {
            seen.push(byte[0]);
        }
        let refusal =
            b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let _ = socket.write_all(refusal).await;
    });
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    let endpoint = Endpoint::new(&uri, &no_roots(), Duration::from_secs(2)).unwrap();
    let origin = Arc::new(Origin::new(endpoint, 1, 8, Duration::from_secs(60)));
    // A body whose end never comes: the answer must not wait for it.
    let (_keep_open, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let endless = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut post = get("/upload");
    post.method = Method::POST;
    let answer = origin
        .send(&post, &[], endless, Pieces::Shared)
        .await
        .unwrap();
    assert_eq!(answer.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn reads_start_at_a_page_and_grow_while_a_large_body_fills_them() {
    let body = vec![b'x'; 96 * 1024];
    let mut answer =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    answer.extend_from_slice(&body);
    let answer: &'static [u8] = answer.leak();
    let up = scripted(vec![(answer, After::KeepOpen), (HELLO, After::KeepOpen)]).await;
    let mut response = send_get(&up.origin, "/big").await.unwrap().response;
    let mut sizes = Vec::new();
    while let Some(frame) = response.body_mut().frame().await {
        sizes.push(frame.unwrap().into_data().unwrap().len());
    }
    assert_eq!(sizes.iter().sum::<usize>(), body.len());
    assert!(
        sizes[0] < super::body::READ_BUFFER,
        "the first read shares one page with the head: {sizes:?}"
    );
    assert!(
        sizes.iter().any(|&n| n > 2 * super::body::READ_BUFFER),
        "later reads grew: {sizes:?}"
    );
    // The connection is kept, and the next small answer is read as before.
    let answer = send_get(&up.origin, "/").await.unwrap();
    assert_eq!(body_of(answer).await, "hello");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_read_buffer_is_lent_only_while_there_are_bytes_to_read() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_on, resume) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_request(&mut socket).await.unwrap();
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nx-a: 1\r\n\r\nhello";
        socket.write_all(head).await.unwrap();
        resume.await.unwrap();
        socket.write_all(b"world").await.unwrap();
        let _ = read_request(&mut socket).await;
    });
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    let endpoint = Endpoint::new(&uri, &no_roots(), Duration::from_secs(2)).unwrap();
    let origin = Arc::new(Origin::new(endpoint, 1, 8, Duration::from_secs(60)));
    assert_eq!(origin.spare_count(), 0);
    let answer = origin
        .send(&get("/"), &[], Body::empty(), Pieces::CopiedWhenSmall)
        .await
        .unwrap();
    let headers = answer.response.headers().clone();
    let mut body = answer.response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "hello");
    // The rest has not been sent: the body waits, and its emptied buffer went back.
    let waiting = std::future::poll_fn(|cx| {
        let polled = http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx);
        std::task::Poll::Ready(polled.is_pending())
    });
    assert!(waiting.await, "the rest of the body cannot have arrived");
    assert_eq!(
        origin.spare_count(),
        1,
        "a waiting body holds no read buffer"
    );
    assert_eq!(headers["x-a"], "1");
    go_on.send(()).unwrap();
    let rest = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(rest, "world");
    assert!(body.frame().await.is_none());
    assert_eq!((origin.idle_count(), origin.spare_count()), (1, 1));
}
