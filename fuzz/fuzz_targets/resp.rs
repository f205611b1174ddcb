//! The RESP parser on any bytes: it gives a command, asks for more bytes, or refuses with an
//! error; never a panic, and never a command that claims more bytes than it was given. Then
//! the same bytes fed one at a time, as a slow client sends them, must give the same commands.
#![no_main]

use libfuzzer_sys::fuzz_target;
use semisync_kv::resp::wire::{Limits, parse};

const LIMITS: Limits = Limits {
    max_bulk: 4096,
    max_parts: 64,
    max_command: 16 * 1024,
};

/// The commands in `buf`, as the connection loop reads them, and how it ended.
fn commands(buf: &[u8]) -> (Vec<Vec<Vec<u8>>>, bool) {
    let (mut used, mut found) = (0, Vec::new());
    loop {
        match parse(&buf[used..], &LIMITS) {
            Ok(Some((parts, taken))) => {
                assert!(taken > 0 && used + taken <= buf.len());
                used += taken;
                found.push(parts);
            }
            Ok(None) => return (found, false),
            Err(_) => return (found, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (whole, whole_failed) = commands(data);
    // Byte by byte: a command is read once all its bytes are there, and never earlier; the
    // same commands come out, and the same bytes are refused.
    let mut trickled = Vec::new();
    let mut buf = Vec::new();
    let mut failed = false;
    'bytes: for &byte in data {
        buf.push(byte);
        loop {
            match parse(&buf, &LIMITS) {
                Ok(Some((parts, taken))) => {
                    trickled.push(parts);
                    buf.drain(..taken);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'bytes;
                }
            }
        }
    }
    assert_eq!(failed, whole_failed);
    if !failed {
        assert_eq!(trickled, whole);
    }
});
