//! Mutual authentication of a replication connection (both the stream and the liveness watch)
//! by challenge-response over the shared `ha.security_token`, so the token itself never
//! crosses the wire, with or without TLS.
//!
//! ```text
//! slave  -> master  Hello | Watch { version, group, epoch, [last,] member, slave_nonce }
//! master -> slave   Challenge { version, master_nonce }        (both written at once)
//! slave  -> master  Proof { HMAC-SHA256(token, "slave" transcript) }
//! master -> slave   Welcome { epoch, HMAC-SHA256(token, "master" transcript + epoch) }
//!                   | Reject { reason }
//! ```
//!
//! Both sides speak first, so the handshake costs what the old hello/welcome exchange did
//! plus half a round trip, and a peer that is not this protocol at all (a TLS listener
//! reached in plain TCP, an older master waiting for its hello) fails at once, not after a
//! timeout.
//!
//! The transcript binds everything the two sides agree on in the handshake: a label naming
//! the role of the prover (so a slave's proof can never be reflected back as a master's), the
//! protocol version, the connection kind (a watch's proof opens no stream), the group, the
//! member, the epoch expected, the slave's position, and both nonces (fresh from the OS random
//! generator on every connection, so a recorded proof is never accepted again). Proofs are
//! compared in constant time.
//!
//! The master checks the slave's proof before it sends anything that depends on the token;
//! a slave whose proof fails gets a `Reject` without the master's proof, so a stranger cannot
//! collect master proofs to guess the token offline. The slave checks the master's proof
//! before it acts on anything the master sends (before it wipes or installs a copy, applies an
//! entry or counts a heartbeat).
//!
//! What this does not give without TLS: the frames after the handshake are neither secret nor
//! protected from an attacker who can modify traffic on the path, and a listener posing as the
//! master receives a slave proof it could use to guess a weak token offline. Use a long random
//! token, and TLS (`ha.tls_*`) wherever the network is not trusted.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::{Frame, Nonce, Position, Proof, NONCE_LEN, PROTOCOL_VERSION};
use crate::ZkError;

type HmacSha256 = Hmac<Sha256>;

/// Label of the slave's proof (its role), so the two proofs of one handshake never coincide.
const SLAVE_LABEL: &[u8] = b"ferromq replication: slave proves the security token";
/// Label of the master's proof.
const MASTER_LABEL: &[u8] = b"ferromq replication: master proves the security token";

/// Which connection a handshake opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The stream of entries (`Hello`).
    Stream,
    /// The liveness channel (`Watch`).
    Watch,
}

/// What a slave's first frame states: bound into both proofs, so a party that does not know
/// the token cannot alter any of it.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    /// Stream or watch.
    pub channel: Channel,
    /// `broker.name` of the group.
    pub group: &'a str,
    /// The slave's member name.
    pub member: &'a str,
    /// The master epoch the slave expects.
    pub master_epoch: u64,
    /// The slave's position (a stream's hello only).
    pub last: Option<Position>,
}

impl<'a> Opening<'a> {
    /// The opening a `Hello` or `Watch` states, with its nonce; `None` for any other frame.
    pub fn of(frame: &'a Frame) -> Option<(Opening<'a>, &'a Nonce)> {
        match frame {
            Frame::Hello {
                group,
                master_epoch,
                last,
                member,
                nonce,
                ..
            } => Some((
                Opening {
                    channel: Channel::Stream,
                    group,
                    member,
                    master_epoch: *master_epoch,
                    last: Some(*last),
                },
                nonce,
            )),
            Frame::Watch {
                group,
                master_epoch,
                member,
                nonce,
                ..
            } => Some((
                Opening {
                    channel: Channel::Watch,
                    group,
                    member,
                    master_epoch: *master_epoch,
                    last: None,
                },
                nonce,
            )),
            _ => None,
        }
    }
}

/// A fresh nonce from the operating system's random generator.
pub fn nonce() -> Result<Nonce, ZkError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut n).map_err(|e| {
        ZkError::Replication(format!(
            "no random nonce for the replication handshake: {e}"
        ))
    })?;
    Ok(n)
}

fn put_field(m: &mut HmacSha256, b: &[u8]) {
    // Length-prefixed: the concatenation of the fields is unambiguous (a group "ab" + member
    // "c" never reads as group "a" + member "bc").
    m.update(&(b.len() as u64).to_le_bytes());
    m.update(b);
}

/// The keyed MAC over the transcript of one handshake, up to the prover's role.
fn transcript(
    token: &str,
    label: &[u8],
    o: &Opening<'_>,
    master_nonce: &Nonce,
    slave_nonce: &Nonce,
) -> Result<HmacSha256, ZkError> {
    // HMAC takes a key of any length; the error exists only for fixed-key MACs.
    let mut m = HmacSha256::new_from_slice(token.as_bytes())
        .map_err(|_| ZkError::Replication("the security token is not a usable HMAC key".into()))?;
    put_field(&mut m, label);
    m.update(&PROTOCOL_VERSION.to_le_bytes());
    m.update(&[match o.channel {
        Channel::Stream => 1,
        Channel::Watch => 2,
    }]);
    put_field(&mut m, o.group.as_bytes());
    put_field(&mut m, o.member.as_bytes());
    m.update(&o.master_epoch.to_le_bytes());
    match o.last {
        Some(p) => {
            m.update(&[1]);
            m.update(&p.epoch.to_le_bytes());
            m.update(&p.lsn.to_le_bytes());
        }
        None => m.update(&[0]),
    }
    m.update(master_nonce);
    m.update(slave_nonce);
    Ok(m)
}

fn master_transcript(
    token: &str,
    o: &Opening<'_>,
    master_nonce: &Nonce,
    slave_nonce: &Nonce,
    epoch: u64,
) -> Result<HmacSha256, ZkError> {
    let mut m = transcript(token, MASTER_LABEL, o, master_nonce, slave_nonce)?;
    // The epoch the master answers with is its claim: bound too.
    m.update(&epoch.to_le_bytes());
    Ok(m)
}

/// The slave's proof that it knows `token`.
pub fn slave_proof(
    token: &str,
    o: &Opening<'_>,
    master_nonce: &Nonce,
    slave_nonce: &Nonce,
) -> Result<Proof, ZkError> {
    let m = transcript(token, SLAVE_LABEL, o, master_nonce, slave_nonce)?;
    Ok(m.finalize().into_bytes().into())
}

/// Whether `proof` is the slave proof for `token` (in constant time).
pub fn verify_slave(
    token: &str,
    o: &Opening<'_>,
    master_nonce: &Nonce,
    slave_nonce: &Nonce,
    proof: &Proof,
) -> bool {
    transcript(token, SLAVE_LABEL, o, master_nonce, slave_nonce)
        .is_ok_and(|m| m.verify_slice(proof).is_ok())
}

/// The master's proof that it knows `token`, answering the opening with `epoch`.
pub fn master_proof(
    token: &str,
    o: &Opening<'_>,
    master_nonce: &Nonce,
    slave_nonce: &Nonce,
    epoch: u64,
) -> Result<Proof, ZkError> {
    let m = master_transcript(token, o, master_nonce, slave_nonce, epoch)?;
    Ok(m.finalize().into_bytes().into())
}

/// Whether `proof` is the master proof for `token` (in constant time).
pub fn verify_master(
    token: &str,
    o: &Opening<'_>,
    master_nonce: &Nonce,
    slave_nonce: &Nonce,
    epoch: u64,
    proof: &Proof,
) -> bool {
    master_transcript(token, o, master_nonce, slave_nonce, epoch)
        .is_ok_and(|m| m.verify_slice(proof).is_ok())
}

/// The slave's first frame of a connection (written without waiting for the challenge):
/// `Hello` for a stream (with `last`), `Watch` for the liveness channel (without), with a fresh
/// nonce of the slave's, which the master's proof covers. Returns it with that nonce.
pub fn opening_frame(o: &Opening<'_>) -> Result<(Frame, Nonce), ZkError> {
    let nonce = nonce()?;
    let f = match (o.channel, o.last) {
        (Channel::Stream, Some(last)) => Frame::Hello {
            version: PROTOCOL_VERSION,
            group: o.group.into(),
            master_epoch: o.master_epoch,
            last,
            member: o.member.into(),
            nonce,
        },
        (Channel::Stream, None) => {
            return Err(ZkError::Replication(
                "a stream's hello needs the slave's position".into(),
            ))
        }
        (Channel::Watch, _) => Frame::Watch {
            version: PROTOCOL_VERSION,
            group: o.group.into(),
            master_epoch: o.master_epoch,
            member: o.member.into(),
            nonce,
        },
    };
    Ok((f, nonce))
}

/// The master's `Welcome` answering `opening` (a `Hello` or `Watch` whose proof was checked)
/// with `epoch`.
pub fn welcome(
    token: &str,
    master_nonce: &Nonce,
    opening: &Frame,
    epoch: u64,
) -> Result<Frame, ZkError> {
    let Some((o, slave_nonce)) = Opening::of(opening) else {
        return Err(ZkError::Replication(
            "a welcome answers a hello or a watch".into(),
        ));
    };
    Ok(Frame::Welcome {
        epoch,
        proof: master_proof(token, &o, master_nonce, slave_nonce, epoch)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Opening<'static> {
        Opening {
            channel: Channel::Stream,
            group: "g",
            member: "m",
            master_epoch: 3,
            last: Some(Position { epoch: 2, lsn: 9 }),
        }
    }

    #[test]
    fn a_proof_verifies_only_with_the_same_token_transcript_and_role() {
        let (mn, sn) = ([1u8; 32], [2u8; 32]);
        let o = stream();
        let p = slave_proof("tok", &o, &mn, &sn).unwrap();
        assert!(verify_slave("tok", &o, &mn, &sn, &p));
        assert!(!verify_slave("tok2", &o, &mn, &sn, &p), "another token");
        assert!(
            !verify_slave("tok", &o, &[9; 32], &sn, &p),
            "another master nonce"
        );
        assert!(
            !verify_slave("tok", &o, &mn, &[9; 32], &p),
            "another slave nonce"
        );
        assert!(!verify_slave("tok", &o, &sn, &mn, &p), "nonces swapped");
        for other in [
            Opening {
                channel: Channel::Watch,
                last: None,
                ..o
            },
            Opening { group: "h", ..o },
            Opening { member: "n", ..o },
            Opening {
                master_epoch: 4,
                ..o
            },
            Opening {
                last: Some(Position { epoch: 2, lsn: 10 }),
                ..o
            },
        ] {
            assert!(!verify_slave("tok", &other, &mn, &sn, &p), "{other:?}");
        }
        // Field boundaries are part of the transcript.
        let shifted = Opening {
            group: "gm",
            member: "",
            ..o
        };
        assert!(!verify_slave("tok", &shifted, &mn, &sn, &p));
        // A slave's proof is never a master's (reflection), whatever the epoch.
        let e = o.master_epoch;
        assert!(!verify_master("tok", &o, &mn, &sn, e, &p));
        let mp = master_proof("tok", &o, &mn, &sn, e).unwrap();
        assert!(verify_master("tok", &o, &mn, &sn, e, &mp));
        assert!(!verify_master("tok", &o, &mn, &sn, e + 1, &mp));
        assert!(!verify_slave("tok", &o, &mn, &sn, &mp));
    }

    #[test]
    fn frames_built_here_verify_on_the_other_side() {
        let mn = nonce().unwrap();
        assert_ne!(mn, nonce().unwrap(), "two nonces from the OS generator");
        let o = stream();
        let (hello, sn) = opening_frame(&o).unwrap();
        let (seen, n) = Opening::of(&hello).unwrap();
        assert_eq!(*n, sn);
        let p = slave_proof("tok", &o, &mn, &sn).unwrap();
        assert!(verify_slave("tok", &seen, &mn, n, &p));
        let Frame::Welcome { epoch, proof } = welcome("tok", &mn, &hello, 3).unwrap() else {
            panic!("not a welcome");
        };
        assert!(verify_master("tok", &o, &mn, &sn, epoch, &proof));
        assert!(!verify_master("other", &o, &mn, &sn, epoch, &proof));
        let w = Opening {
            channel: Channel::Watch,
            last: None,
            ..o
        };
        let (watch, _) = opening_frame(&w).unwrap();
        assert!(matches!(watch, Frame::Watch { .. }));
        assert!(welcome("tok", &mn, &Frame::Pong { seq: 1 }, 3).is_err());
    }
}
