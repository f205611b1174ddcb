//! The replication stream's binary form (`replication::wire::binary`): whatever bytes arrive, the
//! frame reader and the decoders give a message or an error, never a panic, and never allocate
//! more than what arrived; a message that decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use semisync_kv::replication::wire::binary::{self, Frames};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = binary::decode_batch(data) {
        let mut bytes = Vec::new();
        binary::encode_batch(&batch, &mut bytes);
        assert_eq!(&bytes[8..], data, "a batch reads back to other bytes");
    }
    if let Ok(answer) = binary::decode_answer(data) {
        let mut bytes = Vec::new();
        binary::encode_answer(&answer, &mut bytes);
        assert_eq!(&bytes[8..], data, "an answer reads back to other bytes");
    }
    // The same bytes as a stream of frames, cut at most 4 KiB each.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let mut frames = Frames::new(4096);
        let mut reader = data;
        while let Ok(Some(frame)) = frames.next(&mut reader).await {
            assert!(frame.len() <= 4096);
        }
    });
});
