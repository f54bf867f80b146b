//! Wire codec for the gateway's upstream HTTP/1.1 client: request heads out, response heads
//! and chunked bodies in. It exists because the gateway drives each upstream connection from
//! the request's own task instead of handing it to a separate client connection task, so it
//! needs the framing rules of RFC 9112 as plain functions over read and write buffers rather
//! than a full client stack. Nothing here does I/O; the caller owns the socket and the buffers.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use super::AddedHeaders;

/// The most bytes a response head may take, status line and final empty line included.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields accepted in a response head or a trailer section.
pub const MAX_HEADERS: usize = 100;
/// The longest chunk size line accepted, extensions included, its CRLF excluded.
pub const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes a trailer section may take, its final empty line included.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Under [`Pieces::CopiedWhenSmall`], pieces smaller than this are copied.
pub const SHARED_PIECE_MIN: usize = 4 * 1024;

/// How the pieces handed on (a head, body data, trailers) leave the read buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pieces {
    /// Shared with the buffer, no copy: for a client that takes one answer at a time and has
    /// written it out before the next read needs the buffer (HTTP/1.1).
    #[default]
    Shared,
    /// A small piece (a head, the body of a typical answer) is copied, a large one shared:
    /// for a client whose answers wait together in one connection's send queue (HTTP/2).
    /// Shared, each would keep its whole read buffer alive until the client has it, so the
    /// buffer could not be read into again: every stream in flight held one
    /// (docs/benchmarks.md). A large piece fills most of its buffer anyway.
    CopiedWhenSmall,
}

impl Pieces {
    /// Takes the first `n` bytes of `buf`.
    pub fn take(self, buf: &mut BytesMut, n: usize) -> Bytes {
        if self == Pieces::CopiedWhenSmall && n < SHARED_PIECE_MIN {
            let piece = Bytes::copy_from_slice(&buf[..n]);
            buf.advance(n);
            piece
        } else {
            buf.split_to(n).freeze()
        }
    }
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Why the upstream's bytes could not be read as HTTP/1.1.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The status line or a header line is not valid HTTP/1.x syntax.
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// No complete head within [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// A head or trailer section with more than [`MAX_HEADERS`] fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// The response is neither HTTP/1.0 nor HTTP/1.1.
    #[error("unsupported HTTP version")]
    Version,
    /// A field name or value that `http` refuses.
    #[error("invalid header field name or value")]
    Field,
    /// Content-Length is not a decimal number, or several disagree.
    #[error("invalid content-length")]
    ContentLength,
    /// Transfer-Encoding in an HTTP/1.0 response, whose framing cannot be trusted.
    #[error("transfer-encoding in an HTTP/1.0 response")]
    TransferEncoding,
    /// A chunk size line without hex digits, with junk, overflowing u64 or ending in a bare LF.
    #[error("malformed chunk size line")]
    ChunkSize,
    /// No line end within [`MAX_CHUNK_LINE`] bytes of a chunk size line.
    #[error("chunk size line longer than {MAX_CHUNK_LINE} bytes")]
    ChunkLineTooLong,
    /// Chunk data longer than its announced size.
    #[error("malformed chunk: data not followed by CRLF")]
    ChunkEnd,
    /// The trailer section is not valid field syntax.
    #[error("malformed trailer section")]
    Trailers,
    /// No complete trailer section within [`MAX_TRAILER_BYTES`].
    #[error("trailer section larger than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLarge,
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// There is no body.
    None,
    /// The body is exactly this many bytes.
    Length(u64),
    /// The body uses the chunked transfer coding.
    Chunked,
    /// The body runs until the connection closes.
    Close,
}

/// A parsed response status line and header section.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: http::StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: http::Version,
    /// The header fields, in received order. When Transfer-Encoding overrides Content-Length
    /// the Content-Length field is removed, and equal repeated Content-Length values are
    /// collapsed into one, so that the head can be forwarded as is (RFC 9112 §6.3).
    pub headers: http::HeaderMap,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// Whether the connection can carry another request once this response's body is read.
    pub keep_alive: bool,
}

/// Parses a complete response head at the start of `buf` and removes it from `buf`.
///
/// `Ok(None)`: the head is not complete yet and `buf` is unchanged (the caller reads more and
/// calls again); an error once `buf` holds [`MAX_HEAD_BYTES`] without a complete head.
/// `method` is the request's method (a response to HEAD has no body). Header values are
/// slices of the head, taken out of `buf` as `pieces` says. After an error the connection is
/// unusable and `buf` must be discarded.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
    pieces: Pieces,
) -> Result<Option<ResponseHead>, ProtocolError> {
    // Only the first MAX_HEAD_BYTES are offered, so the limit holds even when one read
    // brought in much more than that.
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let head_len = match response.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD_BYTES => {
            return Err(ProtocolError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(ProtocolError::Version),
        Err(e) => return Err(ProtocolError::Head(e)),
    };
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(ProtocolError::Version),
    };
    // httparse takes any three digits; `http` wants 100..=999.
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(ProtocolError::Head(httparse::Error::Status))?;
    // Names are validated before `buf` is touched; values are slices of the head taken out.
    let fields = collect_fields(window, response.headers)?;
    let head = pieces.take(buf, head_len);
    let mut headers = build_map(&head, fields)?;
    let (framing, reusable) = body_framing(status, version, method, &mut headers)?;
    let keep_alive = reusable && connection_persists(version, &headers);
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// Appends the request line and header section to `dst`.
///
/// Writes "{method} {target} HTTP/1.1\r\n", every header of `headers` as "name: value\r\n"
/// (every value of a multi-valued name, in order), the `added` lines, then the framing
/// header:
/// `Framing::Chunked` adds "transfer-encoding: chunked\r\n"; `Framing::Length(n)` adds
/// "content-length: n\r\n" unless `headers` already has content-length; None/Close add
/// nothing; then "\r\n". The caller has already removed transfer-encoding and other
/// hop-by-hop headers, and `target` is a valid request-target (such as a `Uri`'s path and
/// query), which `http` guarantees cannot smuggle a line break.
pub fn encode_request_head(
    dst: &mut BytesMut,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    added: &[&AddedHeaders],
    framing: Framing,
) {
    debug_assert!(
        !target.bytes().any(|b| b.is_ascii_control() || b == b' '),
        "request-target must not contain spaces or control bytes"
    );
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    // One reservation for the common case; the framing line fits in the slack.
    let added_len: usize = added.iter().map(|a| a.as_bytes().len()).sum();
    dst.reserve(method.as_str().len() + target.len() + fields + added_len + 64);
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.extend_from_slice(b" ");
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    for lines in added {
        dst.extend_from_slice(lines.as_bytes());
    }
    match framing {
        Framing::Chunked => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(len) if !headers.contains_key(CONTENT_LENGTH) => {
            dst.extend_from_slice(b"content-length: ");
            dst.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
        Framing::Length(_) | Framing::None | Framing::Close => {}
    }
    dst.extend_from_slice(b"\r\n");
}

/// Appends a chunk's size line ("{len:x}\r\n") to `dst`; the caller then writes the data and
/// "\r\n".
pub fn encode_chunk_size(dst: &mut BytesMut, len: usize) {
    use std::fmt::Write as _;
    // Writing to a `BytesMut` cannot fail.
    let _ = write!(dst, "{len:x}\r\n");
}

/// What the chunked decoder could take from the buffer.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    /// Some (non-empty) data of the current chunk.
    Data(Bytes),
    /// The last chunk and its trailer section were read; trailers if there were any.
    End(Option<HeaderMap>),
    /// The buffer holds nothing more to decode: read more bytes and call again.
    Incomplete,
}

/// Where the decoder is within the chunked body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk size line.
    #[default]
    SizeLine,
    /// Inside a chunk's data, with this many bytes still to come.
    Data(u64),
    /// Expecting the CRLF that closes a chunk's data.
    DataEnd,
    /// Expecting the trailer section after the last chunk.
    Trailers,
    /// The body is complete.
    Done,
}

/// Decodes a `Transfer-Encoding: chunked` body incrementally from a read buffer.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    pieces: Pieces,
}

impl ChunkedDecoder {
    /// A decoder positioned at the first chunk size line, sharing what it hands on.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that takes its data and trailers out of the buffer as `pieces` says.
    pub fn taking(pieces: Pieces) -> Self {
        ChunkedDecoder {
            state: State::default(),
            pieces,
        }
    }

    /// Consumes framing bytes and returns the next piece of data (taken out of `buf` as the
    /// decoder's [`Pieces`] say), the end, or [`Chunk::Incomplete`].
    ///
    /// Never returns `Data` with an empty `Bytes`, and works whatever the byte boundaries
    /// between calls. Once `End` has been returned, every later call returns `End(None)` and
    /// leaves `buf` alone, since whatever follows belongs to the next response.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, ProtocolError> {
        loop {
            let advanced = match self.state {
                State::SizeLine => self.size_line(buf)?,
                State::Data(remaining) => return Ok(self.data(buf, remaining)),
                State::DataEnd => self.data_end(buf)?,
                State::Trailers => return self.trailers(buf),
                State::Done => return Ok(Chunk::End(None)),
            };
            if !advanced {
                return Ok(Chunk::Incomplete);
            }
        }
    }

    /// Consumes a complete size line; `Ok(false)` when its line end has not arrived yet.
    fn size_line(&mut self, buf: &mut BytesMut) -> Result<bool, ProtocolError> {
        // The content, its CR and its LF: anything longer is over the limit.
        let window = &buf[..buf.len().min(MAX_CHUNK_LINE + 2)];
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            if window.len() >= MAX_CHUNK_LINE + 2 {
                return Err(ProtocolError::ChunkLineTooLong);
            }
            return Ok(false);
        };
        // A bare LF is where parsers disagree, and disagreement is how bodies get smuggled.
        let line = window[..lf]
            .strip_suffix(b"\r")
            .ok_or(ProtocolError::ChunkSize)?;
        let size = parse_chunk_size(line)?;
        buf.advance(lf + 1);
        self.state = if size == 0 {
            State::Trailers
        } else {
            State::Data(size)
        };
        Ok(true)
    }

    /// Hands out as much of the current chunk's data as `buf` holds.
    fn data(&mut self, buf: &mut BytesMut, remaining: u64) -> Chunk {
        if buf.is_empty() {
            return Chunk::Incomplete;
        }
        let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let left = remaining - take as u64;
        self.state = if left == 0 {
            State::DataEnd
        } else {
            State::Data(left)
        };
        Chunk::Data(self.pieces.take(buf, take))
    }

    /// Consumes the CRLF after a chunk's data; `Ok(false)` when it has not fully arrived.
    fn data_end(&mut self, buf: &mut BytesMut) -> Result<bool, ProtocolError> {
        match buf.get(..2) {
            Some(b"\r\n") => {
                buf.advance(2);
                self.state = State::SizeLine;
                Ok(true)
            }
            Some(_) => Err(ProtocolError::ChunkEnd),
            // A lone byte that cannot start CRLF is already an error; no need to wait.
            None if buf.first().is_some_and(|&b| b != b'\r') => Err(ProtocolError::ChunkEnd),
            None => Ok(false),
        }
    }

    /// Consumes the trailer section once it is complete.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Chunk, ProtocolError> {
        let window = &buf[..buf.len().min(MAX_TRAILER_BYTES)];
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, fields) = match httparse::parse_headers(window, &mut slots) {
            Ok(httparse::Status::Complete((len, parsed))) => (len, collect_fields(window, parsed)?),
            Ok(httparse::Status::Partial) if window.len() >= MAX_TRAILER_BYTES => {
                return Err(ProtocolError::TrailersTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(Chunk::Incomplete),
            Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::TooManyHeaders),
            Err(_) => return Err(ProtocolError::Trailers),
        };
        let section = self.pieces.take(buf, len);
        self.state = State::Done;
        if fields.is_empty() {
            return Ok(Chunk::End(None));
        }
        Ok(Chunk::End(Some(build_map(&section, fields)?)))
    }
}

/// Reads a chunk size line without its CRLF: hex digits, then extensions that are ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ProtocolError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ProtocolError::ChunkSize);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let digit = u64::from((b as char).to_digit(16).unwrap_or_default());
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(digit))
            .ok_or(ProtocolError::ChunkSize)?;
    }
    // Whitespace before the extensions (or alone) is tolerated because servers emit it.
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(rest.len())..];
    // Extensions are dropped, but a control byte in them means the line is not what it seems.
    let clean = rest.iter().all(|&b| b == b'\t' || !b.is_ascii_control());
    if rest.is_empty() || (rest[0] == b';' && clean) {
        Ok(size)
    } else {
        Err(ProtocolError::ChunkSize)
    }
}

/// Validates field names and locates each value within `base`, the buffer httparse read.
fn collect_fields(
    base: &[u8],
    parsed: &[httparse::Header<'_>],
) -> Result<Vec<(HeaderName, Range<usize>)>, ProtocolError> {
    // Sized up front: collecting `Result`s gives no size hint, so the vector grew (an
    // allocation and a reallocation on every response).
    let mut fields = Vec::with_capacity(parsed.len());
    for field in parsed {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| ProtocolError::Field)?;
        fields.push((name, offset_in(base, field.value)?));
    }
    Ok(fields)
}

/// The range `part` occupies within `base`; httparse hands out subslices of its input.
fn offset_in(base: &[u8], part: &[u8]) -> Result<Range<usize>, ProtocolError> {
    if part.is_empty() {
        return Ok(0..0);
    }
    let start = part
        .as_ptr()
        .addr()
        .checked_sub(base.as_ptr().addr())
        .ok_or(ProtocolError::Field)?;
    let end = start + part.len();
    if end > base.len() {
        return Err(ProtocolError::Field);
    }
    Ok(start..end)
}

/// Builds the header map with values that are slices of `section` rather than copies.
fn build_map(
    section: &Bytes,
    fields: Vec<(HeaderName, Range<usize>)>,
) -> Result<HeaderMap, ProtocolError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(section.slice(range))
            .map_err(|_| ProtocolError::Field)?;
        map.append(name, value);
    }
    Ok(map)
}

/// Decides how the body is delimited (RFC 9112 §6.3) and whether that framing leaves the
/// connection reusable.
fn body_framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), ProtocolError> {
    // After 101 or a successful CONNECT the connection no longer speaks HTTP/1.1.
    if status == StatusCode::SWITCHING_PROTOCOLS
        || (method == Method::CONNECT && status.is_success())
    {
        return Ok((Framing::None, false));
    }
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::None, true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // HTTP/1.0 has no transfer codings, so whoever added one may have framed it otherwise.
        if version == Version::HTTP_10 {
            return Err(ProtocolError::TransferEncoding);
        }
        // TE with CL smells of smuggling: honour TE, forward no CL, and retire the connection.
        let conflicting = headers.remove(CONTENT_LENGTH).is_some();
        return Ok(if is_chunked(headers) {
            (Framing::Chunked, !conflicting)
        } else {
            (Framing::Close, false)
        });
    }
    match content_length(headers)? {
        Some(len) => Ok((Framing::Length(len), true)),
        None => Ok((Framing::Close, false)),
    }
}

/// Whether chunked is the final transfer coding, across every Transfer-Encoding field.
fn is_chunked(headers: &HeaderMap) -> bool {
    list_items(headers, &TRANSFER_ENCODING)
        .rfind(|item| !item.is_empty())
        .is_some_and(|item| item.eq_ignore_ascii_case(b"chunked"))
}

/// The Content-Length, if any, after checking that every value names the same length.
/// Repeated values are collapsed into one so they are not forwarded as a list.
fn content_length(headers: &mut HeaderMap) -> Result<Option<u64>, ProtocolError> {
    let mut length = None;
    let mut count = 0;
    for item in list_items(headers, &CONTENT_LENGTH) {
        let len = parse_decimal(item).ok_or(ProtocolError::ContentLength)?;
        if length.is_some_and(|seen| seen != len) {
            return Err(ProtocolError::ContentLength);
        }
        length = Some(len);
        count += 1;
    }
    if let (Some(len), 2..) = (length, count) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(length)
}

/// A non-empty run of ASCII digits as a u64; `str::parse` would also take a sign.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Whether the connection outlives this response as far as the Connection field says.
fn connection_persists(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &[u8]| {
        list_items(headers, &CONNECTION).any(|item| item.eq_ignore_ascii_case(token))
    };
    if has(b"close") {
        return false;
    }
    // HTTP/1.0 closes by default and persists only on request.
    version != Version::HTTP_10 || has(b"keep-alive")
}

/// The comma-separated items of every `name` field, in order, with whitespace trimmed.
fn list_items<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl DoubleEndedIterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Reads `wire` as the answer to a `GET`, handed over `step` bytes at a time as reads
/// would, and returns its status and body (what the `upstream_answer` fuzz target checks:
/// no panic, and the same result however the bytes are split). `Ok(None)`: the head never
/// completed. A body cut short ends where the bytes end.
pub fn decode_answer(
    wire: &[u8],
    step: usize,
) -> Result<Option<(StatusCode, Vec<u8>)>, ProtocolError> {
    let mut pieces = wire.chunks(step.max(1));
    let mut buf = BytesMut::new();
    let head = loop {
        if let Some(head) = parse_response_head(&mut buf, &Method::GET, Pieces::Shared)? {
            break head;
        }
        let Some(piece) = pieces.next() else {
            return Ok(None);
        };
        buf.extend_from_slice(piece);
    };
    let mut body = Vec::new();
    let mut decoder = (head.framing == Framing::Chunked).then(ChunkedDecoder::new);
    let mut remaining = match head.framing {
        Framing::None => 0,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::Close => u64::MAX,
    };
    loop {
        let wants_more = match decoder.as_mut() {
            Some(decoder) => match decoder.decode(&mut buf)? {
                Chunk::Data(data) => {
                    body.extend_from_slice(&data);
                    false
                }
                Chunk::End(_) => break,
                Chunk::Incomplete => true,
            },
            None if remaining == 0 => break,
            None => {
                let n = remaining.min(buf.len() as u64) as usize;
                body.extend_from_slice(&buf.split_to(n));
                remaining -= n as u64;
                remaining > 0
            }
        };
        if wants_more {
            let Some(piece) = pieces.next() else { break };
            buf.extend_from_slice(piece);
        }
    }
    Ok(Some((head.status, body)))
}

#[cfg(test)]
mod tests;
