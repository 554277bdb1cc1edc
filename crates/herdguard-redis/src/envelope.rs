//! The bytes stored in Redis for one entry: a format byte, the version as
//! twenty ASCII digits (written by the write script itself, which alone knows
//! the version its write gives the key), a postcard header (times, Δ), then the
//! postcard-encoded value. And the marker a load that stored nothing leaves.
//!
//! The format byte comes first and outside postcard so that an entry written
//! by another release of this crate is refused as a codec error before any
//! field is read, never misread.

use std::time::Duration;

use herdguard::{Entry, EntryMeta, Marker, RemoteError, Timestamp};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The current layout. Bump it whenever the header or its meaning changes.
pub(crate) const FORMAT: u8 = 2;

/// Width of the version field, after the format byte.
pub(crate) const VERSION_DIGITS: usize = 20;

/// The entry's facts, as stored (the version is outside: see the module docs).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Header {
    created_unix_nanos: u64,
    ttl_nanos: u64,
    swr_nanos: u64,
    sie_nanos: u64,
    load_nanos: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Encodes `entry` with `version` in its version field (the write script
/// replaces it with the version its write gives the key), refusing results
/// over `limit` bytes.
pub(crate) fn encode<V: Serialize>(
    entry: &Entry<V>,
    version: u64,
    limit: usize,
) -> Result<Vec<u8>, RemoteError> {
    let meta = entry.meta();
    let header = Header {
        created_unix_nanos: meta.created.as_unix_nanos(),
        ttl_nanos: nanos(meta.ttl),
        swr_nanos: nanos(meta.stale_while_revalidate),
        sie_nanos: nanos(meta.stale_if_error),
        load_nanos: nanos(meta.load_duration),
    };
    let mut out = Vec::with_capacity(1 + VERSION_DIGITS + 48 + std::mem::size_of::<V>());
    out.push(FORMAT);
    out.extend_from_slice(&version_digits(version));
    out = postcard::to_extend(&header, out)
        .map_err(|e| RemoteError::Codec(format!("header: {e}")))?;
    out = postcard::to_extend(entry.value(), out)
        .map_err(|e| RemoteError::Codec(format!("value: {e}")))?;
    if out.len() > limit {
        return Err(RemoteError::TooLarge {
            size: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// `version` as the entry's version field: twenty ASCII digits, zero-padded.
fn version_digits(mut version: u64) -> [u8; VERSION_DIGITS] {
    let mut digits = [b'0'; VERSION_DIGITS];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (version % 10) as u8;
        version /= 10;
    }
    digits
}

/// The version in an entry's version field (bytes 1 to 20, as `GETRANGE key
/// 1 20` reads them), or `None` when they are not twenty digits.
pub(crate) fn version_of(digits: &[u8]) -> Option<u64> {
    if digits.len() != VERSION_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Decodes bytes made by [`encode`].
pub(crate) fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<Entry<V>, RemoteError> {
    let (&format, rest) = bytes
        .split_first()
        .ok_or_else(|| RemoteError::Codec("empty entry".to_string()))?;
    if format != FORMAT {
        return Err(RemoteError::Codec(format!(
            "entry format {format}, this build reads format {FORMAT}"
        )));
    }
    let (digits, rest) = rest
        .split_at_checked(VERSION_DIGITS)
        .ok_or_else(|| RemoteError::Codec("truncated version".to_string()))?;
    let version = version_of(digits)
        .ok_or_else(|| RemoteError::Codec("version is not 20 digits".to_string()))?;
    let (header, rest) = postcard::take_from_bytes::<Header>(rest)
        .map_err(|e| RemoteError::Codec(format!("header: {e}")))?;
    let (value, trailing) = postcard::take_from_bytes::<V>(rest)
        .map_err(|e| RemoteError::Codec(format!("value: {e}")))?;
    if !trailing.is_empty() {
        return Err(RemoteError::Codec(format!(
            "{} trailing bytes",
            trailing.len()
        )));
    }
    Ok(Entry::new(
        value,
        EntryMeta {
            created: Timestamp::from_unix_nanos(header.created_unix_nanos),
            ttl: Duration::from_nanos(header.ttl_nanos),
            stale_while_revalidate: Duration::from_nanos(header.swr_nanos),
            stale_if_error: Duration::from_nanos(header.sie_nanos),
            load_duration: Duration::from_nanos(header.load_nanos),
            version,
        },
    ))
}

/// The stored form of a marker: one kind byte, then a failure's text.
pub(crate) fn encode_marker(marker: &Marker) -> Vec<u8> {
    match marker {
        Marker::Failed(text) => [b"F", text.as_bytes()].concat(),
        Marker::Uncacheable => b"U".to_vec(),
        Marker::LocalOnly => b"L".to_vec(),
        // A marker this build does not know is not stored: waiters then poll.
        _ => Vec::new(),
    }
}

/// A marker from its stored form; anything else is no marker.
pub(crate) fn decode_marker(bytes: &[u8]) -> Option<Marker> {
    match bytes.split_first()? {
        (b'F', text) => Some(Marker::Failed(String::from_utf8_lossy(text).into_owned())),
        (b'U', []) => Some(Marker::Uncacheable),
        (b'L', []) => Some(Marker::LocalOnly),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str) -> Entry<String> {
        Entry::new(
            value.to_string(),
            EntryMeta {
                created: Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
                ttl: Duration::from_secs(60),
                stale_while_revalidate: Duration::from_millis(1500),
                stale_if_error: Duration::from_secs(3600),
                load_duration: Duration::from_micros(12_345),
                version: 3,
            },
        )
    }

    /// The hand-written field and `version_of` agree with the decimal
    /// text of any version, `u64::MAX` (twenty digits) included.
    #[test]
    fn the_version_field_is_the_zero_padded_decimal_of_any_version() {
        let mut rng = fastrand::Rng::with_seed(11);
        let edges = [0, 1, 9, 10, 999_999, 1 << 53, u64::MAX - 1, u64::MAX];
        let random = (0..20_000).map(|_| rng.u64(..) >> rng.u32(0..64));
        for version in edges.into_iter().chain(random) {
            let digits = version_digits(version);
            assert_eq!(digits.as_slice(), format!("{version:020}").as_bytes());
            assert_eq!(version_of(&digits), Some(version));
        }
    }

    #[test]
    fn round_trip_keeps_value_and_times_and_takes_the_given_version() {
        let bytes = encode(&entry("snow"), 7, 1024).unwrap();
        assert_eq!(bytes[0], FORMAT);
        let back: Entry<String> = decode(&bytes).unwrap();
        assert_eq!(back.value(), "snow");
        let expected = EntryMeta {
            version: 7,
            ..*entry("x").meta()
        };
        assert_eq!(*back.meta(), expected);
    }

    #[test]
    fn other_format_is_a_codec_error() {
        let mut bytes = encode(&entry("snow"), 1, 1024).unwrap();
        bytes[0] = FORMAT + 1;
        let err = decode::<String>(&bytes).unwrap_err();
        assert!(
            matches!(err, RemoteError::Codec(ref m) if m.contains("format")),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_truncation_are_codec_errors() {
        assert!(matches!(decode::<String>(&[]), Err(RemoteError::Codec(_))));
        assert!(matches!(
            decode::<String>(b"\x02\xff\xff\xff"),
            Err(RemoteError::Codec(_))
        ));
        let mut bad_digits = encode(&entry("x"), 1, 1024).unwrap();
        bad_digits[5] = b'x';
        assert!(matches!(
            decode::<String>(&bad_digits),
            Err(RemoteError::Codec(_))
        ));
        let bytes = encode(&entry("a longer value"), 1, 1024).unwrap();
        for cut in 1..bytes.len() {
            assert!(
                decode::<String>(&bytes[..cut]).is_err(),
                "cut at {cut} decoded"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            decode::<String>(&extra),
            Err(RemoteError::Codec(_))
        ));
    }

    #[test]
    fn markers_round_trip_and_unknown_bytes_are_no_marker() {
        for m in [
            Marker::Failed("origin said 503".to_string()),
            Marker::Uncacheable,
            Marker::LocalOnly,
        ] {
            assert_eq!(decode_marker(&encode_marker(&m)), Some(m));
        }
        for junk in [&b""[..], b"X", b"U1", b"Lx"] {
            assert_eq!(decode_marker(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn over_the_limit_is_too_large() {
        let big = "x".repeat(500);
        match encode(&entry(&big), 1, 100) {
            Err(RemoteError::TooLarge { size, limit }) => {
                assert!(size > 500);
                assert_eq!(limit, 100);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
