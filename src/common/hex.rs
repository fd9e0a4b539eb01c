//! Lower-case hex without the formatting machinery: registry keys and request ids are made on
//! every request, and `format!("{:02x}")` cost more than the rest of their work.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` in lower-case hex, two digits each, written to the start of `out`.
///
/// # Panics
/// When `out` is shorter than twice `bytes`.
pub fn encode_into(bytes: &[u8], out: &mut [u8]) {
    assert!(out.len() >= 2 * bytes.len(), "hex output too short");
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 15)];
    }
}

/// `bytes` in lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0; 2 * bytes.len()];
    encode_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_become_two_lower_case_digits_each() {
        assert_eq!(super::encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let mut out = [b'-'; 5];
        super::encode_into(&[0xbe, 0xef], &mut out);
        assert_eq!(&out, b"beef-");
    }
}
