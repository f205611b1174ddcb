//! The replication stream's binary form: how a [`Batch`] and its answer travel on the long-lived
//! connection a leader keeps to each follower (`POST /internal/stream`, upgraded to
//! [`STREAM_PROTOCOL`](super::STREAM_PROTOCOL)). The JSON route `POST /internal/replicate` carries
//! the same messages; this form exists because it costs both ends far less per batch.
//!
//! Every message is a **frame**: its length as 8 bytes (little-endian), then that many bytes.
//! Numbers are little-endian, strings are UTF-8 after their length as 4 bytes.
//!
//! - Leader to follower, one frame per batch: `term`, `smallest_quorum`, `quorum_epoch`,
//!   `leader` (8 bytes each), the number of writes (4 bytes), then per write its version's term
//!   and counter (8 bytes each), its key (a string), and `0` for a delete or `1` and the value
//!   (a string with an 8-byte length).
//! - Follower to leader, one frame per batch, in the batches' order: `0`, then a
//!   [`BatchAck`]: the node id (a string), the number of acks (4 bytes), then per ack the
//!   version (8 + 8 bytes), a flags byte (`1` applied, `2` refused) and, when refused, the
//!   reason (a string). Or `1`, then a refusal: the HTTP status the JSON route would have
//!   answered (2 bytes) and its JSON error body (a string), read as that route's answer.
//!
//! Decoding checks what reading the JSON checks (the ranges of terms, quorums and versions,
//! UTF-8), never allocates more than the bytes that arrived, and refuses trailing bytes.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Batch, BatchAck, EntryAck, MAX_JSON_INTEGER, Write};
use crate::store::Version;

/// The bytes of a frame's length.
const HEADER_BYTES: usize = 8;
/// The fewest bytes one write of a batch takes: version, key length, and the delete flag.
const MIN_WRITE_BYTES: usize = 8 + 8 + 4 + 1;
/// The fewest bytes one ack takes: version and flags.
const MIN_ACK_BYTES: usize = 8 + 8 + 1;
/// Most bytes read ahead for a frame at once: a frame that declares more grows its buffer as its
/// bytes arrive, not by its declared length.
const READ_CHUNK: usize = 64 << 10;

/// A follower's answer to one frame of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The batch's acks.
    Acked(BatchAck),
    /// The batch was refused: the HTTP status and JSON error body the JSON route answers.
    Refused {
        /// The status, as a number.
        status: u16,
        /// The error's JSON body.
        body: String,
    },
}

/// Why bytes are not a message of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Appends `batch` to `out` as one frame.
pub fn encode_batch(batch: &Batch, out: &mut Vec<u8>) {
    let start = begin_frame(out);
    for number in [
        batch.term,
        batch.smallest_quorum as u64,
        batch.quorum_epoch,
        batch.leader,
    ] {
        out.extend_from_slice(&number.to_le_bytes());
    }
    put_count(out, batch.writes.len());
    for write in &batch.writes {
        put_version(out, write.version);
        put_string(out, &write.key);
        match &write.value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value.as_bytes());
            }
        }
    }
    end_frame(out, start);
}

/// Reads a batch from a frame's payload.
pub fn decode_batch(payload: &[u8]) -> Result<Batch, Malformed> {
    let mut reader = Reader(payload);
    let term = reader.bounded("term")?;
    let smallest_quorum = reader.bounded("smallest_quorum")? as usize;
    let quorum_epoch = reader.bounded("quorum_epoch")?;
    let leader = reader.u64()?;
    let count = reader.count(MIN_WRITE_BYTES)?;
    let mut writes = Vec::with_capacity(count);
    for _ in 0..count {
        let version = reader.version()?;
        let key = reader.string()?;
        let value = match reader.u8()? {
            0 => None,
            1 => {
                let length = reader.u64()?;
                Some(reader.text(length)?)
            }
            other => return Err(Malformed(format!("{other} is not a value flag (0 or 1)"))),
        };
        writes.push(Arc::new(Write {
            key,
            value,
            version,
        }));
    }
    reader.end()?;
    Ok(Batch {
        term,
        smallest_quorum,
        quorum_epoch,
        leader,
        writes,
    })
}

/// Appends `answer` to `out` as one frame.
pub fn encode_answer(answer: &Answer, out: &mut Vec<u8>) {
    let start = begin_frame(out);
    match answer {
        Answer::Acked(ack) => {
            out.push(0);
            put_string(out, &ack.node_id);
            put_count(out, ack.acks.len());
            for entry in &ack.acks {
                put_version(out, entry.version);
                let refused = if entry.refused.is_some() { 2 } else { 0 };
                out.push(u8::from(entry.applied) | refused);
                if let Some(reason) = &entry.refused {
                    put_string(out, reason);
                }
            }
        }
        Answer::Refused { status, body } => {
            out.push(1);
            out.extend_from_slice(&status.to_le_bytes());
            put_string(out, body);
        }
    }
    end_frame(out, start);
}

/// Reads an answer from a frame's payload.
pub fn decode_answer(payload: &[u8]) -> Result<Answer, Malformed> {
    let mut reader = Reader(payload);
    let answer = match reader.u8()? {
        0 => {
            let node_id = reader.string()?;
            let count = reader.count(MIN_ACK_BYTES)?;
            let mut acks = Vec::with_capacity(count);
            for _ in 0..count {
                let version = reader.version()?;
                let flags = reader.u8()?;
                if flags > 3 {
                    return Err(Malformed(format!("{flags} is not an ack's flags (0 to 3)")));
                }
                let refused = if flags & 2 == 0 {
                    None
                } else {
                    Some(reader.string()?)
                };
                acks.push(EntryAck {
                    version,
                    applied: flags & 1 == 1,
                    refused,
                });
            }
            Answer::Acked(BatchAck { node_id, acks })
        }
        1 => {
            let status = u16::from_le_bytes(reader.array()?);
            let body = reader.string()?;
            Answer::Refused { status, body }
        }
        other => {
            return Err(Malformed(format!(
                "{other} is not an answer's kind (0 or 1)"
            )));
        }
    };
    reader.end()?;
    Ok(answer)
}

/// Reserves a frame's length in `out`; [`end_frame`] fills it in.
fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    start
}

fn end_frame(out: &mut [u8], start: usize) {
    let length = (out.len() - start - HEADER_BYTES) as u64;
    out[start..start + HEADER_BYTES].copy_from_slice(&length.to_le_bytes());
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    // A batch holds at most `MAX_BATCH_WRITES` writes, an answer one ack per write.
    let count = u32::try_from(count).expect("a batch holds fewer than 2^32 writes");
    out.extend_from_slice(&count.to_le_bytes());
}

fn put_version(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(&version.term.to_le_bytes());
    out.extend_from_slice(&version.counter.to_le_bytes());
}

/// A string after its length as 4 bytes: keys (at most 1024 bytes), node ids and reasons. A
/// longer one is cut at a character boundary below 4 GiB, which none of them come near.
fn put_string(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(u32::MAX as usize);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u32).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// Reads a payload from its front, checking each length against the bytes that remain.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, length: u64) -> Result<&[u8], Malformed> {
        let remaining = self.0.len();
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= remaining)
            .ok_or_else(|| {
                Malformed(format!(
                    "a field declares {length} bytes where {remaining} remain"
                ))
            })?;
        let (taken, rest) = self.0.split_at(length);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        Ok(self.take(N as u64)?.try_into().expect("N bytes taken"))
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A number the JSON form bounds by [`MAX_JSON_INTEGER`], so both forms accept the same.
    fn bounded(&mut self, what: &str) -> Result<u64, Malformed> {
        let value = self.u64()?;
        if value > MAX_JSON_INTEGER {
            return Err(Malformed(format!(
                "{what} {value} is above {MAX_JSON_INTEGER}"
            )));
        }
        Ok(value)
    }

    fn version(&mut self) -> Result<Version, Malformed> {
        let term = self.bounded("a version's term")?;
        let counter = self.bounded("a version's counter")?;
        Ok(Version::new(term, counter))
    }

    /// A count of items, each at least `min_bytes` long: no more than the bytes left can hold,
    /// so that a vector sized by it holds no more than what arrived.
    fn count(&mut self, min_bytes: usize) -> Result<usize, Malformed> {
        let count = u32::from_le_bytes(self.array()?) as usize;
        if count > self.0.len() / min_bytes {
            return Err(Malformed(format!(
                "{count} items declared in {} bytes",
                self.0.len()
            )));
        }
        Ok(count)
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let length = u32::from_le_bytes(self.array()?);
        self.text(u64::from(length))
    }

    fn text(&mut self, length: u64) -> Result<String, Malformed> {
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|err| Malformed(format!("a string is not UTF-8: {err}")))
    }

    fn end(&self) -> Result<(), Malformed> {
        match self.0.len() {
            0 => Ok(()),
            extra => Err(Malformed(format!("{extra} bytes after the message"))),
        }
    }
}

/// Cuts a stream of bytes into frames. It keeps what it has read between calls, so
/// [`Frames::next`] may be cancelled (in a `select!`) without losing a byte.
#[derive(Debug)]
pub struct Frames {
    buffer: BytesMut,
    max_bytes: u64,
}

impl Frames {
    /// Frames of at most `max_bytes` each.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            buffer: BytesMut::with_capacity(READ_CHUNK),
            max_bytes,
        }
    }

    /// The next frame's payload from `reader`: `Ok(None)` when the stream ended between frames,
    /// an error when it ended inside one, or a frame declares more than the maximum.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> std::io::Result<Option<Bytes>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            self.reserve();
            if reader.read_buf(&mut self.buffer).await? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the stream ended inside a frame",
                ));
            }
        }
    }

    fn declared(&self) -> Option<u64> {
        let header = self.buffer.get(..HEADER_BYTES)?;
        Some(u64::from_le_bytes(header.try_into().expect("8 bytes")))
    }

    fn parse(&mut self) -> std::io::Result<Option<Bytes>> {
        let Some(length) = self.declared() else {
            return Ok(None);
        };
        if length > self.max_bytes {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a frame declares {length} bytes, more than the {} allowed",
                    self.max_bytes
                ),
            ));
        }
        if ((self.buffer.len() - HEADER_BYTES) as u64) < length {
            return Ok(None);
        }
        self.buffer.advance(HEADER_BYTES);
        Ok(Some(self.buffer.split_to(length as usize).freeze()))
    }

    /// Room for the next read: what the frame begun still misses, up to [`READ_CHUNK`].
    fn reserve(&mut self) {
        let missing = match self.declared() {
            Some(length) => (length + HEADER_BYTES as u64).saturating_sub(self.buffer.len() as u64),
            None => READ_CHUNK as u64,
        };
        self.buffer
            .reserve((missing as usize).clamp(HEADER_BYTES, READ_CHUNK));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn write(key: &str, value: Option<&str>, counter: u64) -> Arc<Write> {
        Arc::new(Write {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            version: Version::new(2, counter),
        })
    }

    fn batch() -> Batch {
        Batch {
            term: 2,
            smallest_quorum: 3,
            quorum_epoch: 1,
            leader: u64::MAX,
            writes: vec![write("color", Some("blue"), 1), write("gone", None, 2)],
        }
    }

    /// The payload of the one frame in `bytes`.
    fn payload(bytes: &[u8]) -> &[u8] {
        let length = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        assert_eq!(length as usize, bytes.len() - 8, "one whole frame");
        &bytes[8..]
    }

    #[test]
    fn a_batch_and_its_answers_read_back_as_they_were_written() {
        let mut bytes = Vec::new();
        encode_batch(&batch(), &mut bytes);
        assert_eq!(decode_batch(payload(&bytes)), Ok(batch()));

        let acked = Answer::Acked(BatchAck {
            node_id: "follower1".to_owned(),
            acks: vec![
                EntryAck {
                    version: Version::new(2, 1),
                    applied: true,
                    refused: None,
                },
                EntryAck {
                    version: Version::new(2, 2),
                    applied: false,
                    refused: Some("the key is empty".to_owned()),
                },
            ],
        });
        let refused = Answer::Refused {
            status: 409,
            body: r#"{"error":"stale_term","term":3}"#.to_owned(),
        };
        for answer in [acked, refused] {
            let mut bytes = Vec::new();
            encode_answer(&answer, &mut bytes);
            assert_eq!(decode_answer(payload(&bytes)), Ok(answer));
        }
    }

    #[test]
    fn what_the_json_form_refuses_the_binary_form_refuses_too() {
        let mut bytes = Vec::new();
        let mut too_new = batch();
        too_new.term = MAX_JSON_INTEGER + 1;
        encode_batch(&too_new, &mut bytes);
        let error = decode_batch(payload(&bytes)).expect_err("a term above 2^53 - 1");
        assert!(error.0.contains("term"), "{error}");

        let mut bytes = Vec::new();
        let mut counter = batch();
        counter.writes = vec![write("k", None, MAX_JSON_INTEGER + 1)];
        encode_batch(&counter, &mut bytes);
        assert!(decode_batch(payload(&bytes)).is_err());

        // A value that is not UTF-8, and a byte after the message.
        let mut bytes = Vec::new();
        let mut valued = batch();
        valued.writes.truncate(1);
        encode_batch(&valued, &mut bytes);
        let mut bad = payload(&bytes).to_vec();
        let at = bad.len() - 1;
        bad[at] = 0xff;
        assert!(
            decode_batch(&bad)
                .expect_err("not UTF-8")
                .0
                .contains("UTF-8")
        );
        let mut long = payload(&bytes).to_vec();
        long.push(0);
        assert!(
            decode_batch(&long)
                .expect_err("trailing")
                .0
                .contains("after")
        );
    }

    #[test]
    fn a_declared_count_or_length_beyond_the_bytes_is_refused_before_allocating() {
        // A batch that declares 2^32 - 1 writes in no bytes at all.
        let mut payload = vec![0u8; 32];
        payload.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = decode_batch(&payload).expect_err("too many writes");
        assert!(error.0.contains("items declared"), "{error}");
        // A value that declares 2^64 - 1 bytes.
        let mut payload = vec![0u8; 32];
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.extend_from_slice(&[0; 16]);
        payload.extend_from_slice(&[0, 0, 0, 0, 1]);
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        let error = decode_batch(&payload).expect_err("a value longer than the batch");
        assert!(error.0.contains("remain"), "{error}");
    }

    #[tokio::test]
    async fn frames_are_cut_wherever_the_reads_split_them() {
        let mut bytes = Vec::new();
        encode_batch(&batch(), &mut bytes);
        encode_batch(&batch(), &mut bytes);
        // One byte per read: every cut a reader can meet.
        let (mut client, mut server) = tokio::io::duplex(1);
        let sent = bytes.clone();
        tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut client, &sent)
                .await
                .expect("written");
        });
        let mut frames = Frames::new(1 << 20);
        for _ in 0..2 {
            let frame = frames
                .next(&mut server)
                .await
                .expect("read")
                .expect("a frame");
            assert_eq!(decode_batch(&frame), Ok(batch()));
        }
        assert!(
            frames
                .next(&mut server)
                .await
                .expect("a clean end")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_frame_longer_than_allowed_or_cut_short_is_an_error() {
        let mut bytes = Vec::new();
        encode_batch(&batch(), &mut bytes);
        let mut frames = Frames::new(8);
        let error = frames.next(&mut &bytes[..]).await.expect_err("too long");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);

        let mut frames = Frames::new(1 << 20);
        let cut = &bytes[..bytes.len() - 1];
        let error = frames.next(&mut &cut[..]).await.expect_err("cut short");
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_message_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_batch(&bytes);
            let _ = decode_answer(&bytes);
        }

        #[test]
        fn any_batch_reads_back(
            term in 1..=MAX_JSON_INTEGER,
            quorum in 0usize..8,
            leader in any::<u64>(),
            writes in proptest::collection::vec(
                ("\\PC{1,8}", proptest::option::of("\\PC{0,16}"), 1..=MAX_JSON_INTEGER),
                0..8,
            ),
        ) {
            let batch = Batch {
                term,
                smallest_quorum: quorum,
                quorum_epoch: 0,
                leader,
                writes: writes
                    .into_iter()
                    .map(|(key, value, counter)| Arc::new(Write { key, value, version: Version::new(term, counter) }))
                    .collect(),
            };
            let mut bytes = Vec::new();
            encode_batch(&batch, &mut bytes);
            prop_assert_eq!(decode_batch(payload(&bytes)), Ok(batch));
        }
    }
}
