//! Choosing between stored variants by the nominated field's own mechanism
//! (RFC 9111 §4.1: "the cache MAY use the selection algorithm of the field"):
//! when no stored variant matches a request's `Vary` fields exactly, one whose
//! `Content-Encoding` (and `Content-Language`) the request accepts with a
//! q-value above zero may answer it, the most wanted first (RFC 9110 §12.4.2,
//! §12.5.3, §12.5.4).
//!
//! Only `Vary` lists made of `Accept-Encoding` and `Accept-Language` qualify:
//! a stored response keeps a digest of its request's fields, not the fields, so
//! any other nominated field could not be compared; these two are judged by the
//! stored response's own fields alone.
//!
//! Conservative where the letter is generous: a coding (`identity` included)
//! or a language is chosen only when the request names it, or `*`, with q > 0.
//! A request without `Accept-Encoding` (which by the letter accepts any coding)
//! is never handed a variant it did not ask for, so a client that sends none
//! never gets a compressed answer by negotiation, and a client that asks for
//! `gzip` is not demoted to an uncompressed variant it did not name. Members that
//! do not parse, and q-values that do not, count as refusals.

use http::header::{
    HeaderName, ACCEPT_ENCODING, ACCEPT_LANGUAGE, CONTENT_ENCODING, CONTENT_LANGUAGE,
};
use http::HeaderMap;

use crate::Vary;

/// How much a request wants a stored variant: per nominated field, in the
/// order of the `Vary` list (sorted), the q-value in thousandths (1–1000).
/// Compared lexicographically: the greater is preferred.
pub type Quality = Vec<u16>;

/// Most list members read from one request field; a field with more is not
/// negotiated at all (a refusal past the bound could otherwise be overridden
/// by a `*` before it). A field is bounded by the request head limit anyway;
/// this bounds the work per stored variant compared.
const MAX_MEMBERS: usize = 64;

/// Whether a URL varying on `vary` may have its variants chosen by q-value.
pub fn negotiable(vary: &Vary) -> bool {
    match vary {
        Vary::Fields(names) => names.iter().all(is_negotiable_field),
        _ => false,
    }
}

fn is_negotiable_field(name: &HeaderName) -> bool {
    *name == ACCEPT_ENCODING || *name == ACCEPT_LANGUAGE
}

/// How much `request` wants a stored response with fields `response`, stored
/// under `vary`; `None` when `vary` is not [`negotiable`] or the request does
/// not accept the response by one of the fields.
pub fn quality(vary: &Vary, request: &HeaderMap, response: &HeaderMap) -> Option<Quality> {
    let Vary::Fields(names) = vary else {
        return None;
    };
    let mut quality = Vec::with_capacity(names.len());
    for name in names {
        let q = if *name == ACCEPT_ENCODING {
            encoding_quality(request, response)
        } else if *name == ACCEPT_LANGUAGE {
            language_quality(request, response)
        } else {
            None
        }?;
        quality.push(q);
    }
    Some(quality)
}

/// The members of a request's list field: (value lowercased, q in thousandths);
/// `None` past [`MAX_MEMBERS`].
fn members(request: &HeaderMap, name: &HeaderName) -> Option<Vec<(String, u16)>> {
    let mut out = Vec::new();
    for line in request.get_all(name) {
        let Ok(text) = line.to_str() else {
            continue;
        };
        for member in text.split(',') {
            let mut parts = member.split(';');
            let value = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if value.is_empty() {
                continue;
            }
            if out.len() >= MAX_MEMBERS {
                return None;
            }
            let mut q = 1000;
            for param in parts {
                let Some((k, v)) = param.split_once('=') else {
                    q = 0;
                    continue;
                };
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_qvalue(v.trim()).unwrap_or(0);
                }
            }
            out.push((value, q));
        }
    }
    Some(out)
}

/// A qvalue (RFC 9110 §12.4.2): `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A content coding under its one name (`x-gzip` is `gzip`, RFC 9110 §8.4.1).
fn coding_name(coding: &str) -> &str {
    match coding {
        "x-gzip" => "gzip",
        "x-compress" => "compress",
        other => other,
    }
}

/// The q-value the request gives the response's content codings: each must
/// be named (or matched by `*`) with q > 0; the least wanted decides.
fn encoding_quality(request: &HeaderMap, response: &HeaderMap) -> Option<u16> {
    let accepted = members(request, &ACCEPT_ENCODING)?;
    let mut codings: Vec<String> = Vec::new();
    for line in response.get_all(CONTENT_ENCODING) {
        for coding in line.to_str().ok()?.split(',') {
            let coding = coding.trim().to_ascii_lowercase();
            if !coding.is_empty() && coding != "identity" {
                codings.push(coding);
            }
        }
    }
    if codings.is_empty() {
        codings.push("identity".to_string());
    }
    let mut least = 1000;
    for coding in &codings {
        // A coding named twice counts at its least: any q=0 refuses it.
        let named = accepted
            .iter()
            .filter(|(c, _)| coding_name(c) == coding_name(coding))
            .map(|(_, q)| *q)
            .min();
        let q = match named {
            Some(q) => q,
            None => accepted
                .iter()
                .filter(|(c, _)| c == "*")
                .map(|(_, q)| *q)
                .min()?,
        };
        least = least.min(q);
    }
    (least > 0).then_some(least)
}

/// The q-value the request gives the response's language (RFC 4647 §3.3.1
/// basic filtering: a range matches a tag equal to it or starting with it and
/// `-`; the longest matching range decides; `*` matches any). A response
/// without `Content-Language` is never chosen this way.
fn language_quality(request: &HeaderMap, response: &HeaderMap) -> Option<u16> {
    let ranges = members(request, &ACCEPT_LANGUAGE)?;
    let mut best: Option<u16> = None;
    for line in response.get_all(CONTENT_LANGUAGE) {
        for tag in line.to_str().ok()?.split(',') {
            let tag = tag.trim().to_ascii_lowercase();
            if tag.is_empty() {
                continue;
            }
            let mut most_specific: Option<(usize, u16)> = None;
            for (range, q) in &ranges {
                let matches = range == "*"
                    || *range == tag
                    || (tag.starts_with(range.as_str())
                        && tag.as_bytes().get(range.len()) == Some(&b'-'));
                let specificity = if range == "*" { 0 } else { range.len() };
                // The most specific range decides; one named twice counts at its least.
                most_specific = match most_specific {
                    _ if !matches => most_specific,
                    Some((s, _)) if specificity < s => most_specific,
                    Some((s, kept)) if specificity == s => Some((s, kept.min(*q))),
                    _ => Some((specificity, *q)),
                };
            }
            if let Some((_, q)) = most_specific {
                best = Some(best.map_or(q, |b| b.max(q)));
            }
        }
    }
    best.filter(|&q| q > 0)
}

/// The stored variant of `primary` that `herdguard serve` and the tower layer
/// answer a request with when its own (`key`) has nothing stored — stale
/// counts as stored and is never passed over (feature `engine`). Candidates are
/// trusted only as a hit is ([`herdguard::Cache::get`]) and must meet the
/// request's `max-age` / `min-fresh`; bounds: [`Variants::negotiate`](crate::variants::Variants::negotiate).
#[cfg(feature = "engine")]
pub fn stored_variant(
    cache: &herdguard::Cache<String, crate::response::CachedResponse>,
    variants: &crate::variants::Variants,
    (primary, key): (&str, &str),
    request: &impl crate::variants::VaryView,
    config: &crate::CacheConfig,
    directives: &crate::RequestDirectives,
) -> Option<herdguard::Cached<crate::response::CachedResponse>> {
    if cache.peek(&key.to_string()).is_some() {
        return None;
    }
    let now = std::time::SystemTime::now();
    let trusted = |k: &str| {
        cache
            .get(&k.to_string())
            .filter(|c| !c.falls_short_of(config, directives, now))
    };
    variants.negotiate(primary, key, request, trusted, |c| c.entry().value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hm;

    fn ae() -> Vary {
        Vary::from_response(&hm(&[("vary", "Accept-Encoding")]))
    }

    fn q(request: &[(&str, &str)], response: &[(&str, &str)]) -> Option<Quality> {
        quality(&ae(), &hm(request), &hm(response))
    }

    #[test]
    fn rfc9111_4_1_only_accept_encoding_and_accept_language_are_negotiable() {
        assert!(negotiable(&ae()));
        assert!(negotiable(&Vary::from_response(&hm(&[(
            "vary",
            "accept-language, Accept-Encoding"
        )]))));
        for other in ["accept-encoding, cookie", "accept", "*"] {
            let vary = Vary::from_response(&hm(&[("vary", other)]));
            assert!(!negotiable(&vary), "{other}");
            assert_eq!(quality(&vary, &hm(&[]), &hm(&[])), None, "{other}");
        }
        assert!(!negotiable(&Vary::None));
    }

    #[test]
    fn rfc9110_12_5_3_a_coding_is_chosen_only_when_accepted_with_q_above_zero() {
        let gzip = [("content-encoding", "gzip")];
        assert_eq!(
            q(&[("accept-encoding", "br, gzip;q=0.5")], &gzip),
            Some(vec![500])
        );
        assert_eq!(q(&[("accept-encoding", "X-GZIP")], &gzip), Some(vec![1000]));
        assert_eq!(q(&[("accept-encoding", "*;q=0.2")], &gzip), Some(vec![200]));
        // Refused: not named, q=0, an explicit q=0 beating `*`, or `*;q=0`.
        assert_eq!(q(&[("accept-encoding", "br")], &gzip), None);
        assert_eq!(q(&[("accept-encoding", "gzip;q=0, br")], &gzip), None);
        assert_eq!(q(&[("accept-encoding", "gzip;q=0.000, *")], &gzip), None);
        assert_eq!(q(&[("accept-encoding", "*;q=0")], &gzip), None);
        assert_eq!(
            q(&[("accept-encoding", "gzip;q=0.5, gzip;q=0")], &gzip),
            None
        );
        assert_eq!(q(&[("accept-encoding", "*, *;q=0")], &gzip), None);
        // No Accept-Encoding, an empty one: never a coding by negotiation.
        assert_eq!(q(&[], &gzip), None);
        assert_eq!(q(&[("accept-encoding", "")], &gzip), None);
        // Garbage q-values refuse.
        for bad in [
            "gzip;q=2",
            "gzip;q=0.5000",
            "gzip;q=abc",
            "gzip;q",
            "gzip;q=1.5",
        ] {
            assert_eq!(q(&[("accept-encoding", bad)], &gzip), None, "{bad}");
        }
        // Several codings: each must be accepted; the least wanted decides.
        let both = [("content-encoding", "gzip"), ("content-encoding", "br")];
        assert_eq!(
            q(&[("accept-encoding", "gzip;q=0.9, br;q=0.3")], &both),
            Some(vec![300])
        );
        assert_eq!(q(&[("accept-encoding", "gzip")], &both), None);
    }

    #[test]
    fn rfc9110_12_5_3_identity_only_when_named_and_not_refused() {
        let plain: [(&str, &str); 0] = [];
        assert_eq!(
            q(&[("accept-encoding", "identity;q=0.5, gzip")], &plain),
            Some(vec![500])
        );
        assert_eq!(q(&[("accept-encoding", "*")], &plain), Some(vec![1000]));
        assert_eq!(
            q(
                &[("accept-encoding", "gzip")],
                &[("content-encoding", "identity")]
            ),
            None
        );
        assert_eq!(q(&[("accept-encoding", "gzip")], &plain), None);
        assert_eq!(q(&[("accept-encoding", "identity;q=0, *")], &plain), None);
        assert_eq!(q(&[("accept-encoding", "*;q=0")], &plain), None);
        assert_eq!(q(&[], &plain), None);
    }

    #[test]
    fn rfc9110_12_5_4_languages_by_basic_filtering() {
        let vary = Vary::from_response(&hm(&[("vary", "accept-language")]));
        let lq = |req: &str, lang: &str| {
            quality(
                &vary,
                &hm(&[("accept-language", req)]),
                &hm(&[("content-language", lang)]),
            )
        };
        assert_eq!(lq("en;q=0.8, de", "en-US"), Some(vec![800]));
        assert_eq!(lq("EN-us", "en-US"), Some(vec![1000]));
        assert_eq!(lq("en-GB", "en-US"), None);
        assert_eq!(lq("e", "en"), None);
        // The most specific range decides.
        assert_eq!(lq("en-US;q=0, en", "en-US"), None);
        assert_eq!(lq("*;q=0.1, de", "fr"), Some(vec![100]));
        assert_eq!(lq("*;q=0", "fr"), None);
        assert_eq!(lq("fr, fr;q=0", "fr"), None);
        assert_eq!(
            quality(&vary, &hm(&[("accept-language", "en")]), &hm(&[])),
            None
        );
        // Both fields: each must accept; one q per field, in Vary order.
        let both = Vary::from_response(&hm(&[("vary", "accept-language, accept-encoding")]));
        let request = hm(&[("accept-language", "de;q=0.5"), ("accept-encoding", "gzip")]);
        let response = hm(&[("content-language", "de"), ("content-encoding", "gzip")]);
        assert_eq!(quality(&both, &request, &response), Some(vec![1000, 500]));
        let plain_de = hm(&[("content-language", "de")]);
        assert_eq!(quality(&both, &request, &plain_de), None);
    }

    #[test]
    fn members_are_bounded() {
        let many = vec!["x"; 10_000].join(",") + ",gzip";
        assert_eq!(
            q(
                &[("accept-encoding", &many)],
                &[("content-encoding", "gzip")]
            ),
            None
        );
    }

    /// The adversary of the bound: `*` first, then enough members to push a
    /// refusal past it. A field longer than the bound is not negotiated at
    /// all, so the refusal past it can never be read as acceptance by `*`.
    #[test]
    fn a_refusal_past_the_member_bound_is_never_overridden() {
        let gzip = [("content-encoding", "gzip")];
        let filler: Vec<String> = (0..MAX_MEMBERS).map(|i| format!("x-{i}")).collect();
        let field = format!("*, {}, gzip;q=0", filler.join(", "));
        assert_eq!(q(&[("accept-encoding", &field)], &gzip), None);
        let lang = Vary::from_response(&hm(&[("vary", "accept-language")]));
        let field = format!("*, {}, fr;q=0", filler.join(", "));
        let request = hm(&[("accept-language", &field)]);
        let fr = hm(&[("content-language", "fr")]);
        assert_eq!(quality(&lang, &request, &fr), None);
        // Within the bound, `*` still answers for what is not named.
        let field = format!("*, {}", filler[..MAX_MEMBERS - 1].join(", "));
        assert_eq!(q(&[("accept-encoding", &field)], &gzip), Some(vec![1000]));
    }
}
