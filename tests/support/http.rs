//! The little HTTP that talking to moto takes: one HTTP/1.1 request per connection
//! (`Connection: close`), its reply's status and body (chunked bodies decoded), and the
//! standard base64 moto's request recorder stores bodies in.
//!
//! Written by hand because the tests and the bench need no more, and an HTTP client
//! crate would be a dependency of chore's for nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One exchange with the server at `addr`: the reply's status and body.
pub fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("reading the reply to {method} {path} from {addr}: {e}"));
    parse_reply(&reply)
}

/// A whole HTTP reply: status and (de-chunked) body.
fn parse_reply(reply: &[u8]) -> (u16, Vec<u8>) {
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP reply: {:?}", String::from_utf8_lossy(reply)));
    let head = String::from_utf8_lossy(&reply[..split]).to_string();
    let body = &reply[split + 4..];
    let status: u16 = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
    )
}

/// Undo HTTP chunked transfer encoding.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).to_string();
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Standard base64 (padding and anything else outside the alphabet skipped).
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_reply_gives_its_status_and_body() {
        let (status, body) = parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!((status, body.as_slice()), (200, &b"{}"[..]));
        let (status, body) = parse_reply(b"HTTP/1.0 400 BAD REQUEST\r\n\r\n");
        assert_eq!((status, body.len()), (400, 0));
    }

    #[test]
    fn a_chunked_reply_is_put_back_together() {
        let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n";
        assert_eq!(parse_reply(reply).1, b"Wikipedia in \r\n\r\nchunks.");
    }

    #[test]
    #[should_panic(expected = "not an HTTP reply")]
    fn a_reply_without_a_head_is_refused() {
        parse_reply(b"garbage");
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8="), b"hello");
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ"), b"hello world");
        assert_eq!(base64_decode("eyJhIjoxfQ=="), br#"{"a":1}"#);
        assert_eq!(base64_decode("+/8="), [0xfb, 0xff]);
        assert!(base64_decode("").is_empty());
    }
}
