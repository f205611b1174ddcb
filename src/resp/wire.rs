//! RESP2, Redis's serialization protocol, as far as a server needs it: commands in (an array of
//! bulk strings, as every client sends them, or an inline line, as typed into `telnet`), and
//! replies out. Pure and synchronous, like the store: the connection loop in `mod.rs` feeds it
//! bytes, and the tests and the fuzz target feed it anything.
//!
//! A command's parts are read only once all their bytes have arrived: a declared length is
//! checked against the limits, and nothing is allocated for it before then, so that a client
//! announcing `$1000000000` costs nothing.

use std::fmt;

/// What a command may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (a key or a value), in bytes.
    pub max_bulk: usize,
    /// Most parts in one command (the name included).
    pub max_parts: usize,
    /// Most bytes of one whole command, headers included: a command of many parts, each at
    /// most `max_bulk`, would otherwise be `max_parts` times that.
    pub max_command: usize,
}

/// Longest line: an inline command, or the `*N` and `$N` headers of an array (64 KiB, as
/// Redis's own inline limit).
pub const MAX_LINE: usize = 64 * 1024;

/// Why the bytes are not RESP. The reply is an error, and the connection is closed: after a
/// malformed part, nothing says where the next command begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// A header's count is not a number.
    InvalidLength {
        /// Which header: `multibulk` (`*N`) or `bulk` (`$N`).
        what: &'static str,
        /// What it held instead (at most 32 bytes of it).
        line: String,
    },
    /// An array with more parts than [`Limits::max_parts`].
    TooManyParts {
        /// The parts it announced.
        parts: i64,
        /// The limit.
        limit: usize,
    },
    /// A bulk string longer than [`Limits::max_bulk`], or of a negative length.
    TooLong {
        /// The length it announced.
        bytes: i64,
        /// The limit.
        limit: usize,
    },
    /// A part of a command that is not a bulk string: a nested array, a number, ...
    Expected {
        /// The type byte found where `$` belongs.
        found: u8,
    },
    /// A command longer than [`Limits::max_command`].
    CommandTooLong {
        /// The limit.
        limit: usize,
    },
    /// A bulk string not followed by CRLF.
    NoCrlf,
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
    /// An inline command whose quotes do not close.
    UnbalancedQuotes,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidLength { what, line } => write!(f, "invalid {what} length {line:?}"),
            Self::TooManyParts { parts, limit } => {
                write!(
                    f,
                    "a command of {parts} parts; the limit is {limit} (MGET, EXISTS and DEL take fewer keys at once)"
                )
            }
            Self::TooLong { bytes, limit } => write!(
                f,
                "a bulk string of {bytes} bytes; the limit is {limit} (MAX_VALUE_BYTES and the key)"
            ),
            Self::Expected { found } => match found {
                b'*' => write!(
                    f,
                    "expected '$', got '*': a command is one array of bulk strings, never nested"
                ),
                found => write!(f, "expected '$', got {:?}", char::from(*found)),
            },
            Self::CommandTooLong { limit } => {
                write!(f, "a command longer than {limit} bytes")
            }
            Self::NoCrlf => write!(f, "a bulk string must end with CRLF"),
            Self::LineTooLong => write!(f, "a line longer than {MAX_LINE} bytes"),
            Self::UnbalancedQuotes => write!(f, "unbalanced quotes in an inline command"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// One command: its parts, the name first, as bytes.
pub type Parts = Vec<Vec<u8>>;

/// Reads one command from the front of `buf`. `Ok(None)`: its bytes have not all arrived yet.
/// `Ok(Some((parts, used)))`: a command and the bytes it took; `parts` is empty for an empty
/// array or a blank line, which a server skips.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Parts, usize)>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// A line from `buf[at..]`, without its CRLF, and where the next one starts.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > MAX_LINE => Err(ProtocolError::LineTooLong),
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        None if rest.len() > MAX_LINE + 1 => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

/// The number of a `*N` or `$N` header (without its marker).
fn number(digits: &[u8], what: &'static str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError::InvalidLength {
            what,
            line: String::from_utf8_lossy(&digits[..digits.len().min(32)]).into_owned(),
        })
}

fn parse_array(buf: &[u8], limits: &Limits) -> Result<Option<(Parts, usize)>, ProtocolError> {
    let Some((header, mut at)) = line(buf, 0)? else {
        return Ok(None);
    };
    let count = number(&header[1..], "multibulk")?;
    if count <= 0 {
        // `*0` and `*-1`: nothing to do, as Redis.
        return Ok(Some((Vec::new(), at)));
    }
    if count as u64 > limits.max_parts as u64 {
        return Err(ProtocolError::TooManyParts {
            parts: count,
            limit: limits.max_parts,
        });
    }
    // Where each part lies, found first: nothing is copied, nor allocated for what a header
    // promises, before the whole command has arrived (a large one arrives in many reads, and
    // is looked at again at each).
    let mut spans = Vec::with_capacity((count as usize).min(16));
    for _ in 0..count {
        let Some(&marker) = buf.get(at) else {
            return Ok(None);
        };
        if marker != b'$' {
            return Err(ProtocolError::Expected { found: marker });
        }
        let Some((header, start)) = line(buf, at)? else {
            return Ok(None);
        };
        let len = number(&header[1..], "bulk")?;
        if len < 0 || len as u64 > limits.max_bulk as u64 {
            return Err(ProtocolError::TooLong {
                bytes: len,
                limit: limits.max_bulk,
            });
        }
        let end = start + len as usize;
        if end + 2 > limits.max_command {
            return Err(ProtocolError::CommandTooLong {
                limit: limits.max_command,
            });
        }
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::NoCrlf);
        }
        spans.push(start..end);
        at = end + 2;
    }
    let parts = spans.into_iter().map(|span| buf[span].to_vec()).collect();
    Ok(Some((parts, at)))
}

/// A line typed by hand: words split by spaces, `"..."` and `'...'` quoting, a bare `\n` ending
/// it as well as CRLF.
fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<(Parts, usize)>, ProtocolError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err(ProtocolError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if end > MAX_LINE {
        return Err(ProtocolError::LineTooLong);
    }
    let text = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let parts = split_words(text)?;
    if parts.len() > limits.max_parts {
        return Err(ProtocolError::TooManyParts {
            parts: parts.len() as i64,
            limit: limits.max_parts,
        });
    }
    Ok(Some((parts, end + 1)))
}

fn split_words(text: &[u8]) -> Result<Parts, ProtocolError> {
    let mut parts = Vec::new();
    let mut bytes = text.iter().copied().peekable();
    loop {
        while bytes.next_if(|b| b.is_ascii_whitespace()).is_some() {}
        let Some(first) = bytes.next() else {
            return Ok(parts);
        };
        let mut word = Vec::new();
        match first {
            quote @ (b'"' | b'\'') => loop {
                match bytes.next() {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b) if b == quote => break,
                    Some(b'\\') if quote == b'"' => match bytes.next() {
                        Some(b'n') => word.push(b'\n'),
                        Some(b'r') => word.push(b'\r'),
                        Some(b't') => word.push(b'\t'),
                        Some(other) => word.push(other),
                        None => return Err(ProtocolError::UnbalancedQuotes),
                    },
                    Some(b) => word.push(b),
                }
            },
            first => {
                word.push(first);
                while let Some(b) = bytes.next_if(|b| !b.is_ascii_whitespace()) {
                    word.push(b);
                }
            }
        }
        parts.push(word);
    }
}

/// A reply, as RESP2 writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(&'static str),
    /// `-ERR ...`: the first word is the error's code, as Redis's (`ERR`, `READONLY`, ...).
    Error(String),
    /// `:3`
    Integer(i64),
    /// `$5\r\nhello`, or `$-1` for none.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`
    Array(Vec<Reply>),
}

impl Reply {
    /// `-ERR message`.
    pub fn err(message: impl fmt::Display) -> Self {
        Self::Error(format!("ERR {message}"))
    }

    /// A bulk string of `bytes`.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Self {
        Self::Bulk(Some(bytes.into()))
    }

    /// About how many bytes the reply takes: its payload, without the headers.
    pub fn size(&self) -> usize {
        match self {
            Self::Simple(text) => text.len(),
            Self::Error(text) => text.len(),
            Self::Integer(_) | Self::Bulk(None) => 8,
            Self::Bulk(Some(bytes)) => bytes.len(),
            Self::Array(items) => items.iter().map(Self::size).sum(),
        }
    }

    /// Appends the reply's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Simple(text) => {
                out.push(b'+');
                out.extend_from_slice(text.as_bytes());
            }
            Self::Error(text) => {
                out.push(b'-');
                // A line break would end the error early and start a reply nobody asked for.
                out.extend(text.bytes().map(|b| match b {
                    b'\r' | b'\n' => b' ',
                    b => b,
                }));
            }
            Self::Integer(n) => {
                out.push(b':');
                out.extend_from_slice(n.to_string().as_bytes());
            }
            Self::Bulk(None) => out.extend_from_slice(b"$-1"),
            Self::Bulk(Some(bytes)) => {
                out.push(b'$');
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
            }
            Self::Array(items) => {
                out.push(b'*');
                out.extend_from_slice(items.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                for item in items {
                    item.encode(out);
                }
                return;
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A command as a client sends it: an array of bulk strings.
pub fn encode_command(parts: &[&[u8]], out: &mut Vec<u8>) {
    Reply::Array(parts.iter().map(|p| Reply::bulk(*p)).collect()).encode(out);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk: 64,
        max_parts: 8,
        max_command: 256,
    };

    /// The command at the front of `buf`, which must be whole.
    fn whole(buf: &[u8]) -> (Parts, usize) {
        parse(buf, &LIMITS).expect("RESP").expect("a whole command")
    }

    fn parts(words: &[&str]) -> Parts {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn an_array_of_bulk_strings_is_a_command() {
        let buf = b"*2\r\n$3\r\nGET\r\n$5\r\ncolor\r\n*1\r\n$4\r\nPING\r\n";
        let (command, used) = whole(buf);
        assert_eq!(command, parts(&["GET", "color"]));
        let (next, rest) = whole(&buf[used..]);
        assert_eq!((next, used + rest), (parts(&["PING"]), buf.len()));
    }

    #[test]
    fn a_command_waits_for_all_its_bytes() {
        let buf = b"*2\r\n$3\r\nSET\r\n$5\r\nhello\r\n";
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut], &LIMITS), Ok(None), "cut at {cut}");
        }
        assert!(matches!(parse(buf, &LIMITS), Ok(Some(_))));
    }

    #[test]
    fn inline_commands_split_words_and_honour_quotes() {
        let (command, used) = whole(b"set color \"dark blue\"\r\nrest");
        assert_eq!(command, parts(&["set", "color", "dark blue"]));
        assert_eq!(used, 23);
        let (command, _) = whole(b"PING\n");
        assert_eq!(command, parts(&["PING"]));
        assert_eq!(parse(b"\r\n", &LIMITS), Ok(Some((Vec::new(), 2))));
        assert_eq!(
            parse(b"get \"open\r\n", &LIMITS),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn what_is_not_a_command_is_refused_before_its_bytes_arrive() {
        // A huge declared length: refused at once, nothing allocated for it.
        assert_eq!(
            parse(b"*1\r\n$1000000000\r\n", &LIMITS),
            Err(ProtocolError::TooLong {
                bytes: 1_000_000_000,
                limit: 64
            })
        );
        assert_eq!(
            parse(b"*1000000\r\n", &LIMITS),
            Err(ProtocolError::TooManyParts {
                parts: 1_000_000,
                limit: 8
            })
        );
        // Nested arrays, numbers and junk where a bulk string belongs.
        assert_eq!(
            parse(b"*1\r\n*1\r\n$4\r\nPING\r\n", &LIMITS),
            Err(ProtocolError::Expected { found: b'*' })
        );
        assert_eq!(
            parse(b"*1\r\n:1\r\n", &LIMITS),
            Err(ProtocolError::Expected { found: b':' })
        );
        assert!(matches!(
            parse(b"*x\r\n", &LIMITS),
            Err(ProtocolError::InvalidLength { .. })
        ));
        assert!(matches!(
            parse(b"*1\r\n$-3\r\n", &LIMITS),
            Err(ProtocolError::TooLong { .. })
        ));
        assert_eq!(
            parse(b"*1\r\n$4\r\nPINGxx", &LIMITS),
            Err(ProtocolError::NoCrlf)
        );
        // Many parts, each within its limit, but too many bytes in all: refused as soon as a
        // header says so, before the bytes arrive.
        let mut many = b"*8\r\n".to_vec();
        for _ in 0..4 {
            many.extend_from_slice(b"$64\r\n");
            many.extend_from_slice(&[b'x'; 64]);
            many.extend_from_slice(b"\r\n");
        }
        many.extend_from_slice(b"$64\r\n");
        assert_eq!(
            parse(&many, &LIMITS),
            Err(ProtocolError::CommandTooLong { limit: 256 })
        );
        // A header that never ends.
        let endless = vec![b'*'; MAX_LINE + 2];
        assert_eq!(parse(&endless, &LIMITS), Err(ProtocolError::LineTooLong));
        let endless = vec![b'a'; MAX_LINE + 1];
        assert_eq!(parse(&endless, &LIMITS), Err(ProtocolError::LineTooLong));
    }

    #[test]
    fn replies_are_written_as_redis_writes_them() {
        let mut out = Vec::new();
        Reply::Array(vec![
            Reply::Simple("OK"),
            Reply::err("unknown\r\ncommand"),
            Reply::Integer(-3),
            Reply::bulk("hi"),
            Reply::Bulk(None),
            Reply::Array(Vec::new()),
        ])
        .encode(&mut out);
        assert_eq!(
            out,
            b"*6\r\n+OK\r\n-ERR unknown  command\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*0\r\n"
        );
    }

    proptest! {
        /// A command encoded as a client sends it parses back to itself, whole, and to
        /// nothing while a byte is missing.
        #[test]
        fn encode_then_parse_gives_the_command_back(
            command in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..8),
        ) {
            let refs: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            let mut buf = Vec::new();
            encode_command(&refs, &mut buf);
            prop_assert_eq!(parse(&buf, &LIMITS), Ok(Some((command.clone(), buf.len()))));
            prop_assert_eq!(parse(&buf[..buf.len() - 1], &LIMITS), Ok(None));
        }

        /// Any bytes give a command, a request for more, or an error; never a panic, and never
        /// a command longer than the bytes.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(buf in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((_, used))) = parse(&buf, &LIMITS) {
                prop_assert!(used > 0 && used <= buf.len());
            }
        }

        /// The same, for bytes that look like RESP.
        #[test]
        fn resp_like_bytes_parse_or_fail_cleanly(
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    &b"*"[..], b"$", b"\r\n", b"1", b"2", b"-1", b"0", b"99", b"PING", b"\"", b" ", b"\n",
                ]),
                0..40,
            ),
        ) {
            let buf: Vec<u8> = pieces.concat();
            if let Ok(Some((_, used))) = parse(&buf, &LIMITS) {
                prop_assert!(used > 0 && used <= buf.len());
            }
        }
    }
}
