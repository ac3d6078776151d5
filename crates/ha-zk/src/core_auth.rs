//! Mutual authentication of a connection between two members running the replication core,
//! before any core message ([`crate::proto_wire`]) crosses it. Sans-I/O: the frames and the
//! proofs; the transport sends and checks them.
//!
//! ```text
//! connector -> accepter  Open { version, group, from, to, nonce_c }   (both written at once)
//! accepter  -> connector Challenge { nonce_a }
//! connector -> accepter  Proof { HMAC(token, "connector" transcript) }
//! accepter  -> connector Proof { HMAC(token, "accepter" transcript) } | Reject { reason }
//! ```
//!
//! The same challenge-response over `ha.security_token` as the older protocol's
//! ([`crate::auth`]): the token never crosses the wire, both nonces come fresh from the OS
//! generator on every connection (a recorded proof is never accepted again), the role label
//! keeps a connector's proof from being reflected as an accepter's, and proofs are compared in
//! constant time. The transcript binds the group and **both member ids**: after the handshake
//! the transport knows which member is at the other end, and the driver closes a connection
//! whose core `Hello` names another member (an `Ack` counts toward confirming writes: it must
//! come from the member it names). The accepter checks the connector's proof before it sends
//! its own, so a stranger collects no accepter proofs to guess the token offline.
//!
//! Without TLS the frames after the handshake are neither secret nor protected from an
//! attacker who can modify traffic on the path: use TLS (`ha.tls_*`) where the network is not
//! trusted, and a long random token.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::proto::MemberId;
use crate::proto_wire::CORE_PROTOCOL_VERSION;
use crate::wire::{
    get_bytes, get_u32, get_u8, need, Nonce, Proof, WireError, NONCE_LEN, PROOF_LEN,
};
use crate::ZkError;

type HmacSha256 = Hmac<Sha256>;

const CONNECTOR_LABEL: &[u8] = b"ferromq replication core: connector proves the security token";
const ACCEPTER_LABEL: &[u8] = b"ferromq replication core: accepter proves the security token";

const T_OPEN: u8 = 48;
const T_CHALLENGE: u8 = 49;
const T_PROOF: u8 = 50;
const T_REJECT: u8 = 51;
/// Longest group name or reject reason accepted.
const TEXT_MAX: usize = 1_024;

/// A handshake frame (same envelope as every replication frame: `len:u32 | type:u8 | body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// Connector's first frame, written at connect without waiting.
    Open {
        /// `broker.name` of the group.
        group: String,
        /// The connecting member.
        from: MemberId,
        /// The member it means to reach.
        to: MemberId,
        /// The connector's nonce.
        nonce: Nonce,
    },
    /// Accepter's first frame, written at accept without waiting.
    Challenge {
        /// The accepter's nonce.
        nonce: Nonce,
    },
    /// A proof (the connector's first, then the accepter's).
    Proof {
        /// HMAC-SHA256 over the transcript.
        proof: Proof,
    },
    /// The accepter refuses (wrong group, not the member asked for, bad proof); it closes.
    Reject {
        /// Why.
        reason: String,
    },
}

/// What both proofs cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript<'a> {
    /// The group.
    pub group: &'a str,
    /// The connector.
    pub from: MemberId,
    /// The accepter.
    pub to: MemberId,
    /// The connector's nonce.
    pub connector_nonce: &'a Nonce,
    /// The accepter's nonce.
    pub accepter_nonce: &'a Nonce,
}

impl Transcript<'_> {
    fn mac(&self, token: &str, label: &[u8]) -> Result<HmacSha256, ZkError> {
        // HMAC takes a key of any length; the error exists only for fixed-key MACs.
        let mut m = HmacSha256::new_from_slice(token.as_bytes()).map_err(|_| {
            ZkError::Replication("the security token is not a usable HMAC key".into())
        })?;
        for field in [label, self.group.as_bytes()] {
            // Length-prefixed, so that the concatenation is unambiguous.
            m.update(&(field.len() as u64).to_le_bytes());
            m.update(field);
        }
        m.update(&CORE_PROTOCOL_VERSION.to_le_bytes());
        m.update(&self.from.to_le_bytes());
        m.update(&self.to.to_le_bytes());
        m.update(self.connector_nonce);
        m.update(self.accepter_nonce);
        Ok(m)
    }

    /// The connector's proof that it knows `token`.
    pub fn connector_proof(&self, token: &str) -> Result<Proof, ZkError> {
        Ok(self
            .mac(token, CONNECTOR_LABEL)?
            .finalize()
            .into_bytes()
            .into())
    }

    /// Whether `proof` is the connector's proof (constant time).
    pub fn verify_connector(&self, token: &str, proof: &Proof) -> bool {
        self.mac(token, CONNECTOR_LABEL)
            .is_ok_and(|m| m.verify_slice(proof).is_ok())
    }

    /// The accepter's proof that it knows `token`.
    pub fn accepter_proof(&self, token: &str) -> Result<Proof, ZkError> {
        Ok(self
            .mac(token, ACCEPTER_LABEL)?
            .finalize()
            .into_bytes()
            .into())
    }

    /// Whether `proof` is the accepter's proof (constant time).
    pub fn verify_accepter(&self, token: &str, proof: &Proof) -> bool {
        self.mac(token, ACCEPTER_LABEL)
            .is_ok_and(|m| m.verify_slice(proof).is_ok())
    }
}

fn put_text(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(TEXT_MAX)];
    b.put_u32_le(s.len() as u32);
    b.put_slice(s);
}

fn get_text(r: &mut Bytes) -> Result<String, WireError> {
    let b = get_bytes(r)?;
    if b.len() > TEXT_MAX {
        return Err(WireError::Malformed("handshake text too long"));
    }
    String::from_utf8(b.to_vec()).map_err(|_| WireError::Malformed("string is not UTF-8"))
}

fn get_nonce(r: &mut Bytes) -> Result<Nonce, WireError> {
    need(r, NONCE_LEN)?;
    let mut n = [0u8; NONCE_LEN];
    r.copy_to_slice(&mut n);
    Ok(n)
}

fn get_proof(r: &mut Bytes) -> Result<Proof, WireError> {
    need(r, PROOF_LEN)?;
    let mut p = [0u8; PROOF_LEN];
    r.copy_to_slice(&mut p);
    Ok(p)
}

/// Appends `h` as one frame (length prefix included).
pub fn encode(b: &mut BytesMut, h: &Handshake) {
    let start = b.len();
    b.put_u32_le(0);
    match h {
        Handshake::Open {
            group,
            from,
            to,
            nonce,
        } => {
            b.put_u8(T_OPEN);
            b.put_u32_le(CORE_PROTOCOL_VERSION);
            put_text(b, group);
            b.put_u32_le(*from);
            b.put_u32_le(*to);
            b.put_slice(nonce);
        }
        Handshake::Challenge { nonce } => {
            b.put_u8(T_CHALLENGE);
            b.put_slice(nonce);
        }
        Handshake::Proof { proof } => {
            b.put_u8(T_PROOF);
            b.put_slice(proof);
        }
        Handshake::Reject { reason } => {
            b.put_u8(T_REJECT);
            put_text(b, reason);
        }
    }
    let len = (b.len() - start - 4) as u32;
    b[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Decodes one frame body (type byte first).
pub fn decode(mut body: Bytes) -> Result<Handshake, WireError> {
    let r = &mut body;
    let h = match get_u8(r)? {
        T_OPEN => {
            let version = get_u32(r)?;
            if version != CORE_PROTOCOL_VERSION {
                return Err(WireError::CoreVersion(version));
            }
            Handshake::Open {
                group: get_text(r)?,
                from: get_u32(r)?,
                to: get_u32(r)?,
                nonce: get_nonce(r)?,
            }
        }
        T_CHALLENGE => Handshake::Challenge {
            nonce: get_nonce(r)?,
        },
        T_PROOF => Handshake::Proof {
            proof: get_proof(r)?,
        },
        T_REJECT => Handshake::Reject {
            reason: get_text(r)?,
        },
        _ => return Err(WireError::Malformed("handshake frame type")),
    };
    if r.has_remaining() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "a long random token";

    fn t<'a>(cn: &'a Nonce, an: &'a Nonce) -> Transcript<'a> {
        Transcript {
            group: "g",
            from: 2,
            to: 1,
            connector_nonce: cn,
            accepter_nonce: an,
        }
    }

    #[test]
    fn both_proofs_verify_with_the_token_and_nothing_else() {
        let (cn, an) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let tr = t(&cn, &an);
        let c = tr.connector_proof(TOKEN).unwrap();
        let a = tr.accepter_proof(TOKEN).unwrap();
        assert!(tr.verify_connector(TOKEN, &c));
        assert!(tr.verify_accepter(TOKEN, &a));
        // Roles are not interchangeable (no reflection).
        assert_ne!(c, a);
        assert!(!tr.verify_accepter(TOKEN, &c));
        assert!(!tr.verify_connector(TOKEN, &a));
        // Another token, group, member, target or nonce: refused.
        assert!(!tr.verify_connector("another token", &c));
        let other = [3u8; NONCE_LEN];
        for changed in [
            Transcript { group: "h", ..tr },
            Transcript { from: 3, ..tr },
            Transcript { to: 3, ..tr },
            Transcript {
                connector_nonce: &other,
                ..tr
            },
            Transcript {
                accepter_nonce: &other,
                ..tr
            },
        ] {
            assert!(!changed.verify_connector(TOKEN, &c), "{changed:?}");
            assert!(!changed.verify_accepter(TOKEN, &a), "{changed:?}");
        }
        // Unambiguous fields: group "g" + from 2 is not group "g\u{2}" + from 0.
        let shifted = Transcript {
            group: "g\u{2}",
            from: 0,
            ..tr
        };
        assert!(!shifted.verify_connector(TOKEN, &c));
    }

    #[test]
    fn frames_round_trip_and_malformed_ones_are_errors() {
        let frames = [
            Handshake::Open {
                group: "orders".into(),
                from: 3,
                to: 1,
                nonce: [7u8; NONCE_LEN],
            },
            Handshake::Challenge {
                nonce: [9u8; NONCE_LEN],
            },
            Handshake::Proof {
                proof: [4u8; PROOF_LEN],
            },
            Handshake::Reject {
                reason: "not member 1".into(),
            },
        ];
        for h in frames {
            let mut b = BytesMut::new();
            encode(&mut b, &h);
            let body = b.freeze().slice(4..);
            assert_eq!(decode(body.clone()).unwrap(), h);
            for cut in 0..body.len() {
                assert!(decode(body.slice(..cut)).is_err(), "{h:?} cut at {cut}");
            }
            let mut longer = BytesMut::from(&body[..]);
            longer.put_u8(0);
            assert!(decode(longer.freeze()).is_err());
        }
        // Another version, and a core message where a handshake frame belongs.
        let mut b = BytesMut::new();
        b.put_u8(T_OPEN);
        b.put_u32_le(5);
        assert!(matches!(decode(b.freeze()), Err(WireError::CoreVersion(5))));
        let mut b = BytesMut::new();
        crate::proto_wire::encode(
            &mut b,
            &crate::proto::Msg::Ack {
                epoch: 1,
                received: 1,
                durable: 1,
            },
        );
        assert!(decode(b.freeze().slice(4..)).is_err());
    }
}
