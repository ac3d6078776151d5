//! Distinguished names: the subject of a client certificate, read from its DER encoding, and
//! the RFC 4514 strings (`CN=app,O=Acme,C=DE`, what `openssl x509 -noout -subject -nameopt
//! RFC2253` prints and Java's `X500Principal.getName()` returns) that
//! `[[security.certificate_users]]` names them by.
//!
//! A small DER reader of its own rather than an X.509 crate: the broker needs only the subject,
//! and it reads it from a certificate rustls has already verified against `tls.ca`.
//! Two names are equal when their RDNs are, in order, with attribute types compared without
//! regard to case (`cn` = `CN`, or the dotted OID) and values compared exactly after escapes
//! are undone.

use std::fmt;

/// Why a certificate's subject could not be read, or a configured name not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    /// The DER encoding is cut short or malformed.
    #[error("malformed certificate: {0}")]
    Der(&'static str),
    /// A configured string is not an RFC 4514 distinguished name.
    #[error("{0:?} is not a distinguished name like \"CN=app,O=Acme\": {1}")]
    Syntax(String, &'static str),
}

/// One attribute of a relative distinguished name: its type (a keyword in upper case, such as
/// `CN`, or a dotted OID) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attribute {
    kind: String,
    value: String,
}

/// A distinguished name, most specific RDN first (RFC 4514 order, the reverse of the DER
/// order); each RDN holds one or more attributes (`+` in the string form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn(Vec<Vec<Attribute>>);

/// Attribute types with an RFC 4514 keyword (plus `emailAddress`, which OpenSSL prints by
/// name), as OID arcs.
const KEYWORDS: &[(&[u64], &str)] = &[
    (&[2, 5, 4, 3], "CN"),
    (&[2, 5, 4, 7], "L"),
    (&[2, 5, 4, 8], "ST"),
    (&[2, 5, 4, 10], "O"),
    (&[2, 5, 4, 11], "OU"),
    (&[2, 5, 4, 6], "C"),
    (&[2, 5, 4, 9], "STREET"),
    (&[0, 9, 2342, 19200300, 100, 1, 25], "DC"),
    (&[0, 9, 2342, 19200300, 100, 1, 1], "UID"),
    (&[1, 2, 840, 113549, 1, 9, 1], "EMAILADDRESS"),
];

/// Most RDNs (and attributes per RDN) a name may have: far above any real certificate's, low
/// enough that a hostile configuration or certificate cannot make matching costly.
const RDNS_MAX: usize = 64;

/// A DER tag: universal SEQUENCE, SET, OID and the string types a name value may have.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// Reads one TLV from the front of `input`: (tag, contents, everything after it).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DnError> {
    let (&tag, rest) = input.split_first().ok_or(DnError::Der("truncated"))?;
    if tag & 0x1f == 0x1f {
        return Err(DnError::Der(
            "high tag numbers are not used in a certificate name",
        ));
    }
    let (&first, rest) = rest.split_first().ok_or(DnError::Der("truncated length"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(DnError::Der("bad length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(DnError::Der("contents run past the end"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Reads a TLV that must have tag `want`.
fn expect<'a>(
    input: &'a [u8],
    want: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DnError> {
    let (tag, contents, rest) = tlv(input)?;
    if tag != want {
        return Err(DnError::Der(what));
    }
    Ok((contents, rest))
}

/// The arcs of a DER object identifier.
fn oid_arcs(contents: &[u8]) -> Result<Vec<u64>, DnError> {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in contents.iter().enumerate() {
        if value > (u64::MAX >> 7) {
            return Err(DnError::Der("object identifier arc too large"));
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == contents.len() {
            return Err(DnError::Der("object identifier cut short"));
        }
    }
    if arcs.is_empty() {
        return Err(DnError::Der("empty object identifier"));
    }
    Ok(arcs)
}

fn kind_of(arcs: &[u64]) -> String {
    KEYWORDS
        .iter()
        .find(|(a, _)| *a == arcs)
        .map(|(_, k)| (*k).to_string())
        .unwrap_or_else(|| {
            arcs.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(".")
        })
}

/// A value as text: the string types decoded, anything else as `#` and the hex of its whole
/// encoding (RFC 4514 section 2.4).
fn value_text(tag: u8, contents: &[u8], whole: &[u8]) -> String {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString.
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => {
            if let Ok(s) = std::str::from_utf8(contents) {
                return s.to_string();
            }
        }
        // TeletexString: in practice Latin-1.
        0x14 => return contents.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE.
        0x1e if contents.len().is_multiple_of(2) => {
            let units: Vec<u16> = contents
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            if let Ok(s) = String::from_utf16(&units) {
                return s;
            }
        }
        // UniversalString: UTF-32BE.
        0x1c if contents.len().is_multiple_of(4) => {
            let s: Option<String> = contents
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            if let Some(s) = s {
                return s;
            }
        }
        _ => {}
    }
    let mut s = String::from("#");
    for b in whole {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Reads a DER `Name` (SEQUENCE OF SET OF AttributeTypeAndValue).
fn name(contents: &[u8]) -> Result<Dn, DnError> {
    let mut rdns = Vec::new();
    let mut rest = contents;
    while !rest.is_empty() {
        let (set, after) = expect(rest, SET, "an RDN is not a SET")?;
        rest = after;
        let mut rdn = Vec::new();
        let mut attrs = set;
        while !attrs.is_empty() {
            let (atv, after) = expect(attrs, SEQUENCE, "an attribute is not a SEQUENCE")?;
            attrs = after;
            let (oid, value) = expect(atv, OID, "an attribute type is not an OID")?;
            let (tag, contents, trailing) = tlv(value)?;
            if !trailing.is_empty() {
                return Err(DnError::Der("trailing data after an attribute value"));
            }
            rdn.push(Attribute {
                kind: kind_of(&oid_arcs(oid)?),
                value: value_text(tag, contents, value),
            });
            if rdn.len() > RDNS_MAX {
                return Err(DnError::Der("too many attributes in one RDN"));
            }
        }
        if rdn.is_empty() {
            return Err(DnError::Der("empty RDN"));
        }
        rdns.push(rdn);
        if rdns.len() > RDNS_MAX {
            return Err(DnError::Der("too many RDNs"));
        }
    }
    // DER lists the most general RDN first; RFC 4514 strings the most specific.
    rdns.reverse();
    Ok(Dn(rdns))
}

impl Dn {
    /// The subject of a DER-encoded X.509 certificate.
    pub fn from_certificate(der: &[u8]) -> Result<Dn, DnError> {
        let (cert, _) = expect(der, SEQUENCE, "not a certificate")?;
        let (tbs, _) = expect(cert, SEQUENCE, "no tbsCertificate")?;
        let mut rest = tbs;
        // version [0] EXPLICIT, absent for v1 certificates.
        let (tag, _, after) = tlv(rest)?;
        if tag == 0xa0 {
            rest = after;
        }
        let (_serial, after) = expect(rest, 0x02, "no serial number")?;
        let (_signature, after) = expect(after, SEQUENCE, "no signature algorithm")?;
        let (_issuer, after) = expect(after, SEQUENCE, "no issuer")?;
        let (_validity, after) = expect(after, SEQUENCE, "no validity")?;
        let (subject, _) = expect(after, SEQUENCE, "no subject")?;
        name(subject)
    }

    /// Parses an RFC 4514 string (`CN=app,OU=ops+UID=7,O=Acme`): `\`-escapes (a special
    /// character or two hex digits), spaces around `,`, `+` and `=` ignored, types in any case.
    pub fn parse(s: &str) -> Result<Dn, DnError> {
        let bad = |why: &'static str| DnError::Syntax(s.to_string(), why);
        let mut rdns: Vec<Vec<Attribute>> = Vec::new();
        let mut rdn: Vec<Attribute> = Vec::new();
        let mut chars = s.chars().peekable();
        loop {
            // The type, up to '='.
            let mut kind = String::new();
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                kind.push(c);
            }
            let kind = kind.trim().to_ascii_uppercase();
            if kind.is_empty() {
                return Err(bad("an attribute has no type"));
            }
            if !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                return Err(bad(
                    "an attribute type holds a character other than letters, digits, '.' or '-'",
                ));
            }
            // The value, up to an unescaped ',' or '+', undoing escapes. Trailing spaces that
            // were not escaped are dropped.
            let mut bytes: Vec<u8> = Vec::new();
            let mut keep = 0; // length up to the last escaped or non-space byte
            let mut end = None;
            while chars.peek() == Some(&' ') && bytes.is_empty() {
                chars.next();
            }
            while let Some(c) = chars.next() {
                match c {
                    ',' | '+' => {
                        end = Some(c);
                        break;
                    }
                    '\\' => {
                        let e = chars.next().ok_or_else(|| bad("a '\\' at the end"))?;
                        if e.is_ascii_hexdigit() {
                            let lo =
                                chars
                                    .next()
                                    .filter(char::is_ascii_hexdigit)
                                    .ok_or_else(|| {
                                        bad("'\\' takes a special character or two hex digits")
                                    })?;
                            let hex = format!("{e}{lo}");
                            let b =
                                u8::from_str_radix(&hex, 16).map_err(|_| bad("bad hex escape"))?;
                            bytes.push(b);
                        } else {
                            let mut buf = [0u8; 4];
                            bytes.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
                        }
                        keep = bytes.len();
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        if c != ' ' {
                            keep = bytes.len();
                        }
                    }
                }
            }
            bytes.truncate(keep);
            let value = String::from_utf8(bytes).map_err(|_| bad("escapes that are not UTF-8"))?;
            rdn.push(Attribute { kind, value });
            match end {
                Some('+') => {}
                _ => {
                    rdns.push(std::mem::take(&mut rdn));
                }
            }
            if rdns.len() > RDNS_MAX || rdn.len() > RDNS_MAX {
                return Err(bad("too many RDNs"));
            }
            if end.is_none() {
                break;
            }
        }
        Ok(Dn(rdns))
    }
}

/// Escapes an attribute value for the string form (RFC 4514 section 2.4).
fn escape(v: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
    if v.starts_with('#') && !v.is_empty() {
        // A value of `#hex` produced by `value_text` stands for an encoding: printed as is.
        if v.len() > 1 && v[1..].chars().all(|c| c.is_ascii_hexdigit()) {
            return out.write_str(v);
        }
    }
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if c == '\0' {
            out.write_str("\\00")?;
        } else if special {
            write!(out, "\\{c}")?;
        } else {
            write!(out, "{c}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, a) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                let kind = if a.kind == "EMAILADDRESS" {
                    "emailAddress"
                } else {
                    &a.kind
                };
                write!(f, "{kind}=")?;
                escape(&a.value, f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(dn: &[(DnType, &str)]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        // rcgen starts with a CN of its own: begin empty, so the order is ours.
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            p.distinguished_name.push(t.clone(), *v);
        }
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_of_a_certificate_reads_in_rfc_4514_order() {
        let der = cert(&[
            (DnType::CountryName, "DE"),
            (DnType::OrganizationName, "Acme, Inc."),
            (DnType::CommonName, "orders-app"),
        ]);
        let dn = Dn::from_certificate(&der).unwrap();
        assert_eq!(dn.to_string(), "CN=orders-app,O=Acme\\, Inc.,C=DE");
        assert_eq!(
            dn,
            Dn::parse("cn = orders-app, O=Acme\\, Inc. ,c=DE").unwrap()
        );
        assert_eq!(dn, Dn::parse("CN=orders-app,O=Acme\\2C Inc.,C=DE").unwrap());
        assert_ne!(dn, Dn::parse("C=DE,O=Acme\\, Inc.,CN=orders-app").unwrap());
        assert_ne!(dn, Dn::parse("CN=orders-app,O=Acme,C=DE").unwrap());
        assert_ne!(dn, Dn::parse("CN=Orders-app,O=Acme\\, Inc.,C=DE").unwrap());
    }

    #[test]
    fn multi_valued_rdns_unknown_types_and_utf8_values() {
        let dn = Dn::parse("CN=José+UID=7,OU=ops,2.5.4.97=x").unwrap();
        assert_eq!(dn.to_string(), "CN=José+UID=7,OU=ops,2.5.4.97=x");
        assert_eq!(
            dn,
            Dn::parse("CN=Jos\\C3\\A9+uid=7,OU=ops,2.5.4.97=x").unwrap()
        );
        let der = cert(&[(DnType::CommonName, "José")]);
        assert_eq!(
            Dn::from_certificate(&der).unwrap(),
            Dn::parse("CN=José").unwrap()
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(Dn::parse("").is_err());
        assert!(Dn::parse("=x").is_err());
        assert!(Dn::parse("CN=a\\").is_err());
        assert!(Dn::parse("CN=a\\4").is_err());
        let der = cert(&[(DnType::CommonName, "app")]);
        for cut in 0..der.len() {
            assert!(Dn::from_certificate(&der[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Dn::from_certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
