//! A small HTTPS/1.1 client for tests of hearth's HTTP listener: raw requests over TLS
//! with the server's certificate pinned, one request per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use futures_rustls::rustls::pki_types::ServerName;
use futures_rustls::rustls::{ClientConnection, StreamOwned};

use super::Server;
use super::client::{read_pem_cert, tls_config};

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A TLS connection to the server's HTTPS port, verified for its domain.
pub fn connect(server: &Server) -> StreamOwned<ClientConnection, TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], server.http_port()));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from(server.domain().to_owned()).unwrap();
    let conn = ClientConnection::new(tls_config(read_pem_cert(&server.cert_path())), name).unwrap();
    StreamOwned::new(conn, tcp)
}

/// Sends `head` (the request line and headers, without the blank line; `Host` and
/// `Connection: close` are added) and `body`, and reads the whole response.
pub fn request(server: &Server, head: &str, body: &[u8]) -> Response {
    let mut s = connect(server);
    let req = format!(
        "{head}\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
        server.domain(),
        server.http_port()
    );
    s.write_all(req.as_bytes()).unwrap();
    if !body.is_empty() {
        // The server may answer and close before the whole body is sent (413).
        let _ = s.write_all(body);
    }
    let _ = s.flush();
    read_response(&mut s)
}

/// Reads a response until the server closes the connection.
pub fn read_response(s: &mut impl Read) -> Response {
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify, or resets after answering.
            Err(_) if !raw.is_empty() => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    parse(&raw)
}

/// Whatever comes back before the server closes (or a read fails), unparsed.
pub fn read_response_lenient(s: &mut impl Read) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    raw
}

pub fn parse(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}
