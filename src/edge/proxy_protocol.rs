//! The PROXY protocol (HAProxy's, versions 1 and 2) in front of TLS: behind an L4 balancer
//! every connection comes from the balancer's address, so per-client limits (sign-in rate,
//! admin lockouts) would put every user in one bucket. A listener with `proxy_protocol =
//! true` reads the header the balancer writes before the TLS handshake and takes the client
//! address from it, but only from peers in `[server] trusted_proxies`: anyone else could
//! claim any address. Exactly the header's bytes are read, so the TLS bytes behind it stay
//! in the socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The twelve bytes that open a version 2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header (the specification's own bound).
const V1_MAX: usize = 107;
/// The largest version 2 address block accepted (addresses plus TLVs).
const V2_MAX_LEN: usize = 4096;

/// A header that is missing or broken: the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header from a trusted balancer")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header. `Some(client)` for a proxied TCP connection; `None` for a
/// connection the balancer made itself (v2 `LOCAL`, v1 `UNKNOWN`: health checks), which
/// keeps the balancer's own address.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut start = [0u8; 12];
    io.read_exact(&mut start).await?;
    if start == V2_SIGNATURE {
        return read_v2(io).await;
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed(
                "a version 1 line longer than 107 bytes",
            ));
        }
        line.push(io.read_u8().await?);
    }
    parse_v1(&line[..line.len() - 2])
}

/// `PROXY TCP4 src dst sport dport` (or `PROXY UNKNOWN …`).
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::Malformed("not ASCII"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            src,
            _dst,
            sport,
            _dport,
        ] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("bad source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyHeaderError::Malformed("address family mismatch"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("bad source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyHeaderError::Malformed("not PROXY TCP4|TCP6|UNKNOWN")),
    }
}

async fn read_v2<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; 4];
    io.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if len > V2_MAX_LEN {
        return Err(ProxyHeaderError::Malformed("a version 2 block too long"));
    }
    let mut block = vec![0u8; len];
    io.read_exact(&mut block).await?;
    parse_v2(head[0], head[1], &block)
}

/// The version/command byte, the family/protocol byte and the address block of a v2 header.
pub fn parse_v2(
    version_command: u8,
    family: u8,
    block: &[u8],
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("version is not 2"));
    }
    match version_command & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => return Err(ProxyHeaderError::Malformed("unknown command")),
    }
    let short = || ProxyHeaderError::Malformed("address block too short");
    match family {
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2).
        0x11 => {
            let b: &[u8; 12] = block
                .get(..12)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
        0x21 => {
            let b: &[u8; 36] = block
                .get(..36)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(short)?;
            let src: [u8; 16] = b[..16].try_into().expect("16 bytes");
            let ip = Ipv6Addr::from(src);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        // UNSPEC, UDP, Unix sockets: nothing a client address can be taken from.
        _ => Ok(None),
    }
}

/// A version 2 header for a TCP connection from `client` to `server` (tests, benchmarks).
pub fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    let mut block = Vec::new();
    let family = match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            block.extend_from_slice(&c.octets());
            block.extend_from_slice(&s.octets());
            0x11
        }
        (c, s) => {
            let six = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            block.extend_from_slice(&six(c).octets());
            block.extend_from_slice(&six(s).octets());
            0x21
        }
    };
    block.extend_from_slice(&client.port().to_be_bytes());
    block.extend_from_slice(&server.port().to_be_bytes());
    out.push(family);
    out.extend_from_slice(&u16::try_from(block.len()).expect("short").to_be_bytes());
    out.extend_from_slice(&block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        let result = read_header(&mut cursor).await;
        let pos = usize::try_from(cursor.position()).unwrap();
        (result, bytes[pos..].to_vec())
    }

    #[tokio::test]
    async fn version_1_and_2_give_the_client_and_leave_the_tls_bytes() {
        let (got, rest) = read(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n\x16\x03\x01").await;
        assert_eq!(got.unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03\x01");
        let (got, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n").await;
        assert_eq!(got.unwrap(), Some("[2001:db8::1]:4000".parse().unwrap()));
        let (got, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(got.unwrap(), None);

        let client: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let mut v2 = v2_header(client, "10.0.0.1:443".parse().unwrap());
        v2.extend_from_slice(b"\x16");
        let (got, rest) = read(&v2).await;
        assert_eq!(got.unwrap(), Some(client));
        assert_eq!(rest, b"\x16");
        let six: SocketAddr = "[2001:db8::7]:1234".parse().unwrap();
        let (got, _) = read(&v2_header(six, "[2001:db8::1]:443".parse().unwrap())).await;
        assert_eq!(got.unwrap(), Some(six));
        assert_eq!(parse_v2(0x20, 0x11, &[]).unwrap(), None, "LOCAL");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00"[..],
            b"PROXY TCP4 203.0.113.7 10.0.0.1 x 443\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 443\r\n",
            b"PROXY TCP9 a b c d\r\n",
        ] {
            assert!(read(bad).await.0.is_err(), "{bad:?}");
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(read(long.as_bytes()).await.0.is_err());
        assert!(parse_v2(0x21, 0x11, &[1, 2, 3]).is_err(), "short block");
        assert!(parse_v2(0x31, 0x11, &[0; 12]).is_err(), "version 3");
    }
}
