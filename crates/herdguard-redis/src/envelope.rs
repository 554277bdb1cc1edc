//! The bytes stored in Redis for one entry: a format byte, then a postcard
//! header (times, Δ, version), then the postcard-encoded value.
//!
//! The format byte comes first and outside postcard so that an entry written
//! by another release of this crate is refused as a codec error before any
//! field is read, never misread.

use std::time::Duration;

use herdguard::{Entry, EntryMeta, RemoteError, Timestamp};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The current layout. Bump it whenever the header or its meaning changes.
pub(crate) const FORMAT: u8 = 1;

/// The entry's facts, as stored.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Header {
    created_unix_nanos: u64,
    ttl_nanos: u64,
    swr_nanos: u64,
    sie_nanos: u64,
    load_nanos: u64,
    version: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Encodes `entry` with `version` in place of its own (the version the write
/// will give the key), refusing results over `limit` bytes.
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
        version,
    };
    let mut out = vec![FORMAT];
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
            version: header.version,
        },
    ))
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
            decode::<String>(b"\x01\xff\xff\xff"),
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
