//! A minimal blocking HTTP/1.1 client and server-side request reader over std sockets: just
//! enough for the bench backend and the harness's own clients, with no runtime of its own so
//! that it costs as little CPU as possible next to the proxy under test.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _};

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process on the machine, so the
/// backend can stamp an event and the client can tell how long it took to arrive.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec and CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The header block of a request or response, as far as we need it.
#[derive(Debug, Default)]
pub struct Head {
    /// Method (requests) or status code (responses).
    pub first: String,
    /// Request target (requests) or reason (responses).
    pub second: String,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub close: bool,
}

fn parse_head(raw: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(raw).context("header block is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let mut parts = start.splitn(3, ' ');
    let a = parts.next().unwrap_or_default();
    let b = parts.next().unwrap_or_default();
    let mut head = Head::default();
    if a.starts_with("HTTP/") {
        head.first = b.to_string();
        head.second = parts.next().unwrap_or_default().to_string();
    } else {
        head.first = a.to_string();
        head.second = b.to_string();
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(head)
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
    size: u64,
    pub done: bool,
}

#[derive(Debug, Default, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    TrailerLine,
}

impl Dechunker {
    /// Decodes `input`, appending the payload to `out`; returns how many bytes were used
    /// (less than `input.len()` only when the body ended).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<usize> {
        let mut i = 0;
        while i < input.len() && !self.done {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size * 16 + u64::from(d);
                    }
                    b';' => self.state = ChunkState::Ext,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => bail!("bad chunk size byte {b:#x}"),
                },
                ChunkState::Ext => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    }
                }
                ChunkState::SizeLf => {
                    self.state = if self.size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let n = (input.len() - i).min(self.size as usize);
                    out.extend_from_slice(&input[i..i + n]);
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => self.state = ChunkState::DataLf,
                ChunkState::DataLf => self.state = ChunkState::Size,
                ChunkState::Trailer => {
                    // Either the final CRLF or a trailer line.
                    self.state = if b == b'\r' {
                        ChunkState::TrailerLf
                    } else {
                        ChunkState::TrailerLine
                    };
                }
                ChunkState::TrailerLf => self.done = true,
                ChunkState::TrailerLine => {
                    if b == b'\n' {
                        self.state = ChunkState::Trailer;
                    }
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

/// A keep-alive connection with a read buffer.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        Ok(Conn::new(stream))
    }

    pub fn new(stream: TcpStream) -> Conn {
        Conn::with_buffer(stream, 64 * 1024)
    }

    /// A connection whose reads go through a buffer of `size` bytes (large for bulk bodies).
    pub fn with_buffer(stream: TcpStream, size: usize) -> Conn {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
        Conn {
            stream,
            buf: vec![0; size],
            start: 0,
            end: 0,
        }
    }

    /// Reads more into the buffer; returns the number of bytes read (0 at end of stream).
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Reads a header block; `None` when the peer closed the connection before sending one.
    pub fn read_head(&mut self) -> anyhow::Result<Option<Head>> {
        loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                let head = parse_head(&self.buf[self.start..self.start + i])?;
                self.start += i + 4;
                return Ok(Some(head));
            }
            if self.fill()? == 0 {
                if self.start == self.end {
                    return Ok(None);
                }
                bail!("connection closed inside a header block");
            }
        }
    }

    /// Reads a body of `len` bytes, keeping it in `keep` or discarding it.
    pub fn read_exact_body(
        &mut self,
        len: u64,
        mut keep: Option<&mut Vec<u8>>,
    ) -> anyhow::Result<()> {
        let mut left = len;
        while left > 0 {
            if self.start == self.end && self.fill()? == 0 {
                bail!("connection closed with {left} body bytes missing");
            }
            let n = ((self.end - self.start) as u64).min(left) as usize;
            if let Some(out) = keep.as_deref_mut() {
                out.extend_from_slice(&self.buf[self.start..self.start + n]);
            }
            self.start += n;
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads a chunked body, handing each decoded piece to `on_data` as it arrives.
    pub fn read_chunked(&mut self, mut on_data: impl FnMut(&[u8])) -> anyhow::Result<()> {
        let mut dec = Dechunker::default();
        let mut out = Vec::new();
        while !dec.done {
            if self.start == self.end && self.fill()? == 0 {
                bail!("connection closed inside a chunked body");
            }
            let used = dec.feed(&self.buf[self.start..self.end], &mut out)?;
            self.start += used;
            if !out.is_empty() {
                on_data(&out);
                out.clear();
            }
        }
        Ok(())
    }

    /// Reads a whole response; returns the status and the body.
    pub fn read_response(&mut self) -> anyhow::Result<(u16, Vec<u8>)> {
        let head = self
            .read_head()?
            .context("connection closed before a response")?;
        let status: u16 = head.first.parse().context("bad status line")?;
        let mut body = Vec::new();
        if head.chunked {
            self.read_chunked(|d| body.extend_from_slice(d))?;
        } else if let Some(len) = head.content_length {
            self.read_exact_body(len, Some(&mut body))?;
        }
        Ok((status, body))
    }

    pub fn send(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(data).context("cannot send")
    }

    /// Sends a request and reads its response.
    pub fn roundtrip(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send(request)?;
        self.read_response()
    }
}

/// The small chat request every load test sends (an SDK-like client with a key).
pub const CHAT_BODY: &str =
    r#"{"model":"llama3.2","messages":[{"role":"user","content":"Say hello."}]}"#;

pub fn chat_request(path: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAuthorization: Bearer sk-bench\r\n\
         Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{CHAT_BODY}",
        CHAT_BODY.len()
    )
    .into_bytes()
}

pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// `GET path` as a browser asks for a page (`Accept: text/html`).
pub fn page_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_in_pieces() {
        let raw = b"5\r\nhello\r\n1;x=y\r\n \r\n5\r\nworld\r\n0\r\nT: 1\r\n\r\nNEXT";
        for split in 0..raw.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let a = d.feed(&raw[..split], &mut out).unwrap();
            // A first piece that holds the whole body (and some of what follows) ends it.
            let used = if d.done {
                a
            } else {
                assert_eq!(a, split);
                split + d.feed(&raw[split..], &mut out).unwrap()
            };
            assert!(d.done);
            assert_eq!(&out, b"hello world");
            assert_eq!(&raw[used..], b"NEXT");
        }
    }
}
