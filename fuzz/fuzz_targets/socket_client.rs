//! A client of the emit socket that sends arbitrary bytes, half-closes and reads at will. The
//! server must discard what it sends and keep serving it: after every script, a line published
//! last reaches the client whole. One server lives across runs, so leaks and stuck state add up.
#![no_main]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ocelli::emit::{SocketConfig, SocketServer};

fn server() -> &'static SocketServer {
    static SERVER: OnceLock<SocketServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ocelli-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp folder");
        let mut config = SocketConfig::new(dir.join("s.sock"));
        config.max_clients = 1024;
        SocketServer::bind(&config).expect("binds")
    })
}

fuzz_target!(|data: &[u8]| {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let server = server();
    let mut client = UnixStream::connect(server.path()).expect("connects");
    // A client gets the lines published after the writer admits it, which happens on its
    // thread: publish until one arrives, so the script runs against an admitted client.
    client
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut hello = [0u8; 1];
    for _ in 0..1000 {
        server.publish(b"{}");
        if client.read(&mut hello).is_ok_and(|n| n == 1) {
            break;
        }
    }
    assert_eq!(hello, *b"{", "the server never admitted a client");
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    client
        .set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // The script: each op byte picks an action, the next byte its length.
    let mut rest = data;
    let mut write_closed = false;
    while let Some((&op, tail)) = rest.split_first() {
        let len = tail
            .first()
            .map_or(0, |&n| n as usize)
            .min(tail.len().saturating_sub(1));
        let arg = tail.get(1..1 + len).unwrap_or(&[]);
        rest = tail.get(1 + len..).unwrap_or(&[]);
        match op % 4 {
            0 if write_closed => {}
            0 => match client.write(arg) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("the server stopped reading a client: {e}"),
            },
            1 => server.publish(arg.split(|&b| b == b'\n').next().unwrap_or(&[])),
            2 => {
                let mut buf = [0u8; 512];
                let _ = client.read(&mut buf[..len.max(1)]);
            }
            _ => {
                let _ = client.shutdown(Shutdown::Write);
                write_closed = true;
            }
        }
    }
    let marker = format!(
        "{{\"fuzz\":{},\"run\":{}}}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    server.publish(marker.as_bytes());
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Lines published by the script may hold any bytes, so compare bytes, not text.
    let mut reader = BufReader::new(client);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => panic!("the server closed a client that only sent data"),
            Ok(_) if line.strip_suffix(b"\n") == Some(marker.as_bytes()) => break,
            Ok(_) => {}
            Err(e) => panic!("the last line never came: {e}"),
        }
    }
});
