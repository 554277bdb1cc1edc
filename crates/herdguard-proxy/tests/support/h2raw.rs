//! Raw HTTP/2 frames, for clients that break the rules hyper's client keeps
//! (more streams than allowed, rapid resets, no flow-control window).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
/// SETTINGS_INITIAL_WINDOW_SIZE.
pub const INITIAL_WINDOW_SIZE: u16 = 4;
pub const REFUSED_STREAM: u32 = 7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// A GET of `path` as one HEADERS frame (END_STREAM | END_HEADERS), HPACK
/// literals without Huffman.
pub fn get(stream: u32, path: &str) -> Vec<u8> {
    // :method GET, :scheme http (static table 2 and 6).
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(4u8, path), (1, "api.example")] {
        block.push(index); // literal without indexing, name from the static table
        block.push(u8::try_from(value.len()).unwrap());
        block.extend(value.as_bytes());
    }
    frame(HEADERS, 0x1 | 0x4, stream, &block)
}

pub fn reset(stream: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()) // CANCEL
}

/// A connection past the preface and the settings exchange.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    connect_with(addr, &[]).await
}

/// A connection past the preface and the exchange of `settings` (id, value).
pub async fn connect_with(addr: SocketAddr, settings: &[(u16, u32)]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut payload = Vec::new();
    for (id, value) in settings {
        payload.extend(id.to_be_bytes());
        payload.extend(value.to_be_bytes());
    }
    hello.extend(frame(SETTINGS, 0, 0, &payload));
    tcp.write_all(&hello).await.unwrap();
    loop {
        let (kind, flags, _, _) = read(&mut tcp).await.expect("server settings");
        if kind == SETTINGS && flags & 1 == 0 {
            break;
        }
    }
    tcp.write_all(&frame(SETTINGS, 1, 0, &[])).await.unwrap();
    tcp
}

/// The next frame: type, flags, stream, payload (`None` once closed).
pub async fn read(tcp: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

pub fn code(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([
        payload[at],
        payload[at + 1],
        payload[at + 2],
        payload[at + 3],
    ])
}
