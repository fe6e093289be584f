//! Bytes to text in any common encoding: UTF-8/16/32 with or without a byte-order mark,
//! then a statistical guess (chardetng) among the legacy encodings (Latin-1, Windows-1252,
//! and the others encoding_rs knows), and EBCDIC (code page 500) from mainframe exports.

/// Decodes text; `None` if the bytes do not look like text in any encoding.
pub fn decode_text(bytes: &[u8]) -> Option<String> {
    let text = decode_any(bytes);
    if looks_like_text(&text) {
        return Some(text);
    }
    let text = looks_like_ebcdic(bytes).then(|| ebcdic(bytes))?;
    looks_like_text(&text).then_some(text)
}

/// EBCDIC text: the space (0x40) is its most common byte, and the ASCII range below it, where
/// EBCDIC keeps only control codes, holds nothing but line ends, tabs and padding.
fn looks_like_ebcdic(bytes: &[u8]) -> bool {
    let s = sample(bytes);
    let spaces = s.iter().filter(|&&b| b == 0x40).count();
    let low = s
        .iter()
        .filter(|&&b| b < 0x40 && !matches!(b, 0x05 | 0x0D | 0x15 | 0x25 | 0x00 | 0x1A))
        .count();
    s.len() >= 16 && spaces * 10 >= s.len() && low * 100 <= s.len()
}

fn ebcdic(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| CP500[b as usize]).collect()
}

/// EBCDIC code page 500 (International), with NL (0x15) read as a line feed.
#[rustfmt::skip]
const CP500: [char; 256] = [
    '\u{0}', '\u{1}', '\u{2}', '\u{3}', '\u{9c}', '\u{9}', '\u{86}', '\u{7f}',
    '\u{97}', '\u{8d}', '\u{8e}', '\u{b}', '\u{c}', '\u{d}', '\u{e}', '\u{f}',
    '\u{10}', '\u{11}', '\u{12}', '\u{13}', '\u{9d}', '\u{a}', '\u{8}', '\u{87}',
    '\u{18}', '\u{19}', '\u{92}', '\u{8f}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{1f}',
    '\u{80}', '\u{81}', '\u{82}', '\u{83}', '\u{84}', '\u{a}', '\u{17}', '\u{1b}',
    '\u{88}', '\u{89}', '\u{8a}', '\u{8b}', '\u{8c}', '\u{5}', '\u{6}', '\u{7}',
    '\u{90}', '\u{91}', '\u{16}', '\u{93}', '\u{94}', '\u{95}', '\u{96}', '\u{4}',
    '\u{98}', '\u{99}', '\u{9a}', '\u{9b}', '\u{14}', '\u{15}', '\u{9e}', '\u{1a}',
    ' ', '\u{a0}', '\u{e2}', '\u{e4}', '\u{e0}', '\u{e1}', '\u{e3}', '\u{e5}',
    '\u{e7}', '\u{f1}', '[', '.', '<', '(', '+', '!',
    '&', '\u{e9}', '\u{ea}', '\u{eb}', '\u{e8}', '\u{ed}', '\u{ee}', '\u{ef}',
    '\u{ec}', '\u{df}', ']', '$', '*', ')', ';', '^',
    '-', '/', '\u{c2}', '\u{c4}', '\u{c0}', '\u{c1}', '\u{c3}', '\u{c5}',
    '\u{c7}', '\u{d1}', '\u{a6}', ',', '%', '_', '>', '?',
    '\u{f8}', '\u{c9}', '\u{ca}', '\u{cb}', '\u{c8}', '\u{cd}', '\u{ce}', '\u{cf}',
    '\u{cc}', '`', ':', '#', '@', '\'', '=', '"',
    '\u{d8}', 'a', 'b', 'c', 'd', 'e', 'f', 'g',
    'h', 'i', '\u{ab}', '\u{bb}', '\u{f0}', '\u{fd}', '\u{fe}', '\u{b1}',
    '\u{b0}', 'j', 'k', 'l', 'm', 'n', 'o', 'p',
    'q', 'r', '\u{aa}', '\u{ba}', '\u{e6}', '\u{b8}', '\u{c6}', '\u{a4}',
    '\u{b5}', '~', 's', 't', 'u', 'v', 'w', 'x',
    'y', 'z', '\u{a1}', '\u{bf}', '\u{d0}', '\u{dd}', '\u{de}', '\u{ae}',
    '\u{a2}', '\u{a3}', '\u{a5}', '\u{b7}', '\u{a9}', '\u{a7}', '\u{b6}', '\u{bc}',
    '\u{bd}', '\u{be}', '\u{ac}', '|', '\u{af}', '\u{a8}', '\u{b4}', '\u{d7}',
    '{', 'A', 'B', 'C', 'D', 'E', 'F', 'G',
    'H', 'I', '\u{ad}', '\u{f4}', '\u{f6}', '\u{f2}', '\u{f3}', '\u{f5}',
    '}', 'J', 'K', 'L', 'M', 'N', 'O', 'P',
    'Q', 'R', '\u{b9}', '\u{fb}', '\u{fc}', '\u{f9}', '\u{fa}', '\u{ff}',
    '\\', '\u{f7}', 'S', 'T', 'U', 'V', 'W', 'X',
    'Y', 'Z', '\u{b2}', '\u{d4}', '\u{d6}', '\u{d2}', '\u{d3}', '\u{d5}',
    '0', '1', '2', '3', '4', '5', '6', '7',
    '8', '9', '\u{b3}', '\u{db}', '\u{dc}', '\u{d9}', '\u{da}', '\u{9f}',
];

fn decode_any(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return String::from_utf8_lossy(rest).into_owned();
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE\x00\x00") {
        return utf32(rest, false);
    }
    if let Some(rest) = bytes.strip_prefix(b"\x00\x00\xFE\xFF") {
        return utf32(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, false);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, true);
    }
    if let Some(big_endian) = utf32_without_bom(bytes) {
        return utf32(bytes, big_endian);
    }
    if let Some(big_endian) = utf16_without_bom(bytes) {
        return utf16(bytes, big_endian);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => return text.to_string(),
        // Valid UTF-8 cut short inside a character (e.g. a sample of a larger file).
        Err(err) if err.error_len().is_none() && bytes.len() - err.valid_up_to() < 4 => {
            return String::from_utf8_lossy(&bytes[..err.valid_up_to()]).into_owned();
        }
        Err(_) => {}
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(bytes, true);
    let encoding = detector.guess(None, chardetng::Utf8Detection::Deny);
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

fn utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|pair| {
        if big_endian {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_le_bytes([pair[0], pair[1]])
        }
    });
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

fn utf32(bytes: &[u8], big_endian: bool) -> String {
    bytes
        .chunks_exact(4)
        .map(|q| {
            let v = if big_endian {
                u32::from_be_bytes([q[0], q[1], q[2], q[3]])
            } else {
                u32::from_le_bytes([q[0], q[1], q[2], q[3]])
            };
            char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER)
        })
        .collect()
}

/// The sample the heuristics look at.
fn sample(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(8192)]
}

/// UTF-16 without a BOM: mostly-ASCII text leaves every other byte zero.
fn utf16_without_bom(bytes: &[u8]) -> Option<bool> {
    let s = sample(bytes);
    if s.len() < 4 {
        return None;
    }
    let pairs = s.len() / 2;
    let even_zero = s.iter().step_by(2).filter(|&&b| b == 0).count();
    let odd_zero = s.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
    let (even, odd) = (
        even_zero as f64 / pairs as f64,
        odd_zero as f64 / pairs as f64,
    );
    if odd > 0.4 && even < 0.05 {
        Some(false)
    } else if even > 0.4 && odd < 0.05 {
        Some(true)
    } else {
        None
    }
}

/// UTF-32 without a BOM: three of every four bytes zero.
fn utf32_without_bom(bytes: &[u8]) -> Option<bool> {
    let s = sample(bytes);
    if s.len() < 8 || !s.len().is_multiple_of(4) {
        return None;
    }
    let quads = s.chunks_exact(4);
    let n = quads.len() as f64;
    // Text in the Basic Multilingual Plane leaves the two high bytes of each unit zero.
    let le = quads
        .clone()
        .filter(|q| q[2] == 0 && q[3] == 0 && q[0] != 0)
        .count() as f64;
    let be = quads
        .filter(|q| q[0] == 0 && q[1] == 0 && q[3] != 0)
        .count() as f64;
    if le / n > 0.9 {
        Some(false)
    } else if be / n > 0.9 {
        Some(true)
    } else {
        None
    }
}

/// Text has few control characters and few undecodable bytes.
fn looks_like_text(text: &str) -> bool {
    let mut total = 0usize;
    let mut bad = 0usize;
    for c in text.chars().take(20_000) {
        total += 1;
        let control = c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0C');
        if control || c == char::REPLACEMENT_CHARACTER {
            bad += 1;
        }
    }
    total == 0 || bad * 100 <= total * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_common_encoding() {
        let text = "Grüße, naïve café — “quoted”";
        let utf16le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let utf16be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let utf32le: Vec<u8> = text
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        let with = |bom: &[u8], body: &[u8]| [bom, body].concat();
        assert_eq!(decode_text(text.as_bytes()).unwrap(), text);
        assert_eq!(
            decode_text(&with(b"\xEF\xBB\xBF", text.as_bytes())).unwrap(),
            text
        );
        assert_eq!(decode_text(&with(b"\xFF\xFE", &utf16le)).unwrap(), text);
        assert_eq!(decode_text(&with(b"\xFE\xFF", &utf16be)).unwrap(), text);
        assert_eq!(decode_text(&utf16le).unwrap(), text);
        assert_eq!(decode_text(&utf16be).unwrap(), text);
        assert_eq!(
            decode_text(&with(b"\xFF\xFE\x00\x00", &utf32le)).unwrap(),
            text
        );
        assert_eq!(decode_text(&utf32le).unwrap(), text);
        let (cp1252, _, _) =
            encoding_rs::WINDOWS_1252.encode("Les “guillemets” coûtent cher, déjà.");
        assert_eq!(
            decode_text(&cp1252).unwrap(),
            "Les “guillemets” coûtent cher, déjà."
        );
        let latin1 = b"Sch\xf6ne Gr\xfc\xdfe aus K\xf6ln, sagte der M\xfcller.";
        assert_eq!(
            decode_text(latin1).unwrap(),
            "Schöne Grüße aus Köln, sagte der Müller."
        );
    }

    #[test]
    fn decodes_ebcdic() {
        let encoded: Vec<u8> = "Hello, World!\nZürich 42 [ok]"
            .chars()
            .map(|c| CP500.iter().position(|&e| e == c).unwrap() as u8)
            .collect();
        assert_eq!(encoded[..5], [0xC8, 0x85, 0x93, 0x93, 0x96]);
        assert_eq!(
            decode_text(&encoded).unwrap(),
            "Hello, World!\nZürich 42 [ok]"
        );
    }

    #[test]
    fn binary_is_not_text() {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(decode_text(&garbage).is_none());
        assert!(
            decode_text(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00")
                .is_none()
        );
    }
}
