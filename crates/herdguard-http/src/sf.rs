//! A small RFC 8941 (Structured Field Values) subset: enough to *parse* a Dictionary (the syntax of
//! RFC 9213 targeted cache-control fields) and to *serialize* the tokens, strings and integers that
//! RFC 9211 `Cache-Status` needs.
//!
//! Parsing follows RFC 8941 §4.2 strictly; any syntax error makes the whole field invalid, which is
//! what RFC 9213 §2.1 asks for ("a parsing error ... that field MUST be ignored").

/// A bare item (RFC 8941 §3.3). Byte sequences and decimals are recognised so that a field using
/// them still parses, but their contents are not needed here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BareItem {
    /// §3.3.1
    Integer(i64),
    /// §3.3.2 (kept only as "some decimal": no directive takes one).
    Decimal,
    /// §3.3.3
    String(String),
    /// §3.3.4
    Token(String),
    /// §3.3.5 (contents are not kept).
    ByteSeq,
    /// §3.3.6
    Boolean(bool),
}

/// A dictionary member's value (RFC 8941 §3.2); parameters are parsed and dropped, as RFC 9213
/// §2.1 says ("Parameters received on directives are to be ignored").
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MemberValue {
    /// A single item.
    Item(BareItem),
    /// An inner list (no cache directive takes one).
    InnerList,
}

/// Largest integer RFC 8941 allows (15 digits).
const MAX_INTEGER_DIGITS: usize = 15;

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// RFC 8941 §4.2.3.3
    fn key(&mut self) -> Option<String> {
        let first = self.peek()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'.' | b'*')
            {
                self.pos += 1;
            } else {
                break;
            }
        }
        let bytes = self.input.get(start..self.pos)?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    /// RFC 8941 §4.2.3.2 (values kept: none).
    fn parameters(&mut self) -> Option<()> {
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip_sp();
            self.key()?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// RFC 8941 §4.2.3.1
    fn bare_item(&mut self) -> Option<BareItem> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string().map(BareItem::String),
            b'*' | b'A'..=b'Z' | b'a'..=b'z' => Some(BareItem::Token(self.token())),
            b':' => self.byte_seq(),
            b'?' => self.boolean(),
            _ => None,
        }
    }

    /// RFC 8941 §4.2.4
    fn number(&mut self) -> Option<BareItem> {
        let negative = if self.peek() == Some(b'-') {
            self.pos += 1;
            true
        } else {
            false
        };
        let mut int_digits = String::new();
        while let Some(c @ b'0'..=b'9') = self.peek() {
            int_digits.push(char::from(c));
            self.pos += 1;
        }
        if int_digits.is_empty() {
            return None;
        }
        if self.peek() == Some(b'.') {
            if int_digits.len() > 12 {
                return None;
            }
            self.pos += 1;
            let mut frac = 0usize;
            while let Some(b'0'..=b'9') = self.peek() {
                frac += 1;
                self.pos += 1;
            }
            if frac == 0 || frac > 3 {
                return None;
            }
            return Some(BareItem::Decimal);
        }
        if int_digits.len() > MAX_INTEGER_DIGITS {
            return None;
        }
        let value: i64 = int_digits.parse().ok()?;
        Some(BareItem::Integer(if negative { -value } else { value }))
    }

    /// RFC 8941 §4.2.5
    fn string(&mut self) -> Option<String> {
        if self.bump()? != b'"' {
            return None;
        }
        let mut out = String::new();
        loop {
            match self.bump()? {
                b'\\' => match self.bump()? {
                    c @ (b'"' | b'\\') => out.push(char::from(c)),
                    _ => return None,
                },
                b'"' => return Some(out),
                c @ 0x20..=0x7e => out.push(char::from(c)),
                _ => return None,
            }
        }
    }

    /// RFC 8941 §4.2.6 (caller checked the first character).
    fn token(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if is_tchar(c) || c == b':' || c == b'/' {
                self.pos += 1;
            } else {
                break;
            }
        }
        let bytes = self.input.get(start..self.pos).unwrap_or_default();
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// RFC 8941 §4.2.7
    fn byte_seq(&mut self) -> Option<BareItem> {
        self.bump()?;
        loop {
            match self.bump()? {
                b':' => return Some(BareItem::ByteSeq),
                c if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=') => {}
                _ => return None,
            }
        }
    }

    /// RFC 8941 §4.2.8
    fn boolean(&mut self) -> Option<BareItem> {
        self.bump()?;
        match self.bump()? {
            b'0' => Some(BareItem::Boolean(false)),
            b'1' => Some(BareItem::Boolean(true)),
            _ => None,
        }
    }

    /// RFC 8941 §4.2.1.2
    fn inner_list(&mut self) -> Option<MemberValue> {
        self.bump()?;
        loop {
            self.skip_sp();
            match self.peek()? {
                b')' => {
                    self.pos += 1;
                    self.parameters()?;
                    return Some(MemberValue::InnerList);
                }
                _ => {
                    self.bare_item()?;
                    self.parameters()?;
                    if !matches!(self.peek()?, b' ' | b')') {
                        return None;
                    }
                }
            }
        }
    }

    /// RFC 8941 §4.2.1.1
    fn item_or_inner_list(&mut self) -> Option<MemberValue> {
        if self.peek()? == b'(' {
            return self.inner_list();
        }
        let item = self.bare_item()?;
        self.parameters()?;
        Some(MemberValue::Item(item))
    }
}

/// Parses a Dictionary (RFC 8941 §4.2.2) from the field's lines, combined as §4.2 says.
/// Returns `None` on any syntax error. Duplicate keys: the last one wins (§4.2.2).
pub(crate) fn parse_dictionary(lines: &[&[u8]]) -> Option<Vec<(String, MemberValue)>> {
    let mut combined = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(line);
    }
    let mut p = Parser {
        input: &combined,
        pos: 0,
    };
    let mut out: Vec<(String, MemberValue)> = Vec::new();
    p.skip_sp();
    while !p.at_end() {
        let key = p.key()?;
        let value = if p.peek() == Some(b'=') {
            p.pos += 1;
            p.item_or_inner_list()?
        } else {
            p.parameters()?;
            MemberValue::Item(BareItem::Boolean(true))
        };
        out.retain(|(k, _)| *k != key);
        out.push((key, value));
        p.skip_ows();
        if p.at_end() {
            break;
        }
        if p.bump()? != b',' {
            return None;
        }
        p.skip_ows();
        if p.at_end() {
            return None;
        }
    }
    Some(out)
}

/// `tchar` from RFC 9110 §5.6.2.
pub(crate) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `s` can be serialized as an sf-token (RFC 8941 §3.3.4).
pub(crate) fn is_sf_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'*' => {}
        _ => return false,
    }
    bytes.iter().all(|&c| is_tchar(c) || c == b':' || c == b'/')
}

/// Serializes `s` as an sf-string (RFC 8941 §4.1.6). Characters outside printable ASCII cannot be
/// represented and are replaced by `?`.
pub(crate) fn write_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// Serializes `s` as a token when it is one, else as a string (RFC 9211 allows either for the
/// cache name and `detail`).
pub(crate) fn write_token_or_string(out: &mut String, s: &str) {
    if is_sf_token(s) {
        out.push_str(s);
    } else {
        write_sf_string(out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(s: &str) -> Option<Vec<(String, MemberValue)>> {
        parse_dictionary(&[s.as_bytes()])
    }

    #[test]
    fn rfc8941_dictionary_basic_members() {
        let d = dict("max-age=60, no-store, private=\"set-cookie, x\"").unwrap();
        assert_eq!(
            d,
            vec![
                ("max-age".into(), MemberValue::Item(BareItem::Integer(60))),
                (
                    "no-store".into(),
                    MemberValue::Item(BareItem::Boolean(true))
                ),
                (
                    "private".into(),
                    MemberValue::Item(BareItem::String("set-cookie, x".into()))
                ),
            ]
        );
    }

    #[test]
    fn rfc8941_dictionary_last_duplicate_wins_and_params_ignored() {
        let d = dict("max-age=1;a=2, max-age=5;b").unwrap();
        assert_eq!(
            d,
            vec![("max-age".into(), MemberValue::Item(BareItem::Integer(5)))]
        );
    }

    #[test]
    fn rfc8941_dictionary_other_types() {
        let d = dict("a=1.5, b=?0, c=:aGk=:, d=(1 2);x, e=tok/en, f=-3").unwrap();
        assert_eq!(d.len(), 6);
        assert_eq!(d[0].1, MemberValue::Item(BareItem::Decimal));
        assert_eq!(d[1].1, MemberValue::Item(BareItem::Boolean(false)));
        assert_eq!(d[2].1, MemberValue::Item(BareItem::ByteSeq));
        assert_eq!(d[3].1, MemberValue::InnerList);
        assert_eq!(d[4].1, MemberValue::Item(BareItem::Token("tok/en".into())));
        assert_eq!(d[5].1, MemberValue::Item(BareItem::Integer(-3)));
    }

    #[test]
    fn rfc8941_dictionary_rejects_garbage() {
        for bad in [
            "Max-Age=60", // keys are lowercase
            "max-age=60,",
            "max-age=",
            "a=\"unterminated",
            "a=1.2345",
            "a=1234567890123456",
            "a=\"bad\\escape\"",
            "a b",
            ",a",
            "a=?2",
            "a=(1 2",
            "a=@",
        ] {
            assert!(dict(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn rfc8941_dictionary_multiple_lines_and_whitespace() {
        let d = parse_dictionary(&[b" max-age=5", b"no-cache\t"]).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].0, "no-cache");
        assert_eq!(dict("").unwrap(), vec![]);
    }

    #[test]
    fn rfc8941_serialization_of_tokens_and_strings() {
        assert!(is_sf_token("herdguard"));
        assert!(is_sf_token("a:b/c"));
        assert!(!is_sf_token("1abc"));
        assert!(!is_sf_token("a b"));
        assert!(!is_sf_token(""));
        let mut s = String::new();
        write_sf_string(&mut s, "a \"q\" \\ é");
        assert_eq!(s, r#""a \"q\" \\ ?""#);
        let mut t = String::new();
        write_token_or_string(&mut t, "coalesced stale");
        assert_eq!(t, "\"coalesced stale\"");
    }
}
