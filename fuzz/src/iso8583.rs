//! The checks of the `iso8583_decode` target: any bytes through `iso8583::decode`.
//!
//! Whatever the bytes, decoding returns a message or an error and never panics; a message it
//! returns encodes again, and that encoding decodes to the same message (the bitmap may come back
//! in upper case, and a secondary bitmap that marked nothing is left out, so the bytes themselves
//! may differ), and is never longer than the bytes it came from.

use actor_bank::iso8583::{decode, encode};

/// Runs the checks on one input.
pub fn check(data: &[u8]) {
    let Ok(message) = decode(data) else {
        return;
    };
    let encoded = encode(&message).expect("a decoded message encodes");
    assert!(encoded.len() <= data.len(), "the encoding grew");
    assert_eq!(
        decode(&encoded).expect("an encoded message decodes"),
        message,
        "decode(encode(m)) differs from m"
    );
}
