//! A TCP proxy on loopback that a test can cut like a phone changing networks: the
//! client's side of every connection is closed at once, while the server's side is left
//! open and silent (half-open, as a server sees a phone that vanished), until the proxy
//! is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// One proxied connection: the two sockets, and whether it was cut.
struct Pair {
    client: TcpStream,
    server: TcpStream,
    is_cut: Arc<AtomicBool>,
}

pub struct Proxy {
    addr: SocketAddr,
    pairs: Arc<Mutex<Vec<Pair>>>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy address");
        let pairs: Arc<Mutex<Vec<Pair>>> = Arc::default();
        let list = pairs.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let is_cut = Arc::new(AtomicBool::new(false));
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let is_cut = is_cut.clone();
                    thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if is_cut.load(Ordering::SeqCst) {
                                        // Cut: what the server still sends goes nowhere.
                                        continue;
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        // A normal end travels on; after a cut the server hears nothing.
                        if !is_cut.load(Ordering::SeqCst) {
                            let _ = to.shutdown(Shutdown::Write);
                        }
                    });
                }
                list.lock().unwrap().push(Pair {
                    client,
                    server,
                    is_cut,
                });
            }
        });
        Proxy { addr, pairs }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection made so far: the client's side closes; the server's stays
    /// open and silent.
    pub fn cut(&self) {
        for p in self.pairs.lock().unwrap().iter() {
            p.is_cut.store(true, Ordering::SeqCst);
            let _ = p.client.shutdown(Shutdown::Both);
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.pairs.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for p in self.pairs.lock().unwrap().iter() {
            let _ = p.client.shutdown(Shutdown::Both);
            let _ = p.server.shutdown(Shutdown::Both);
        }
    }
}
