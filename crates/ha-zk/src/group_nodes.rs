//! The ZooKeeper side of the replication core ([`crate::proto`]): the group's `state` node and
//! its ephemeral `leader` node (`docs/replication.md`, "State"), read with watches into
//! [`Event::Group`], and every [`ZkOp`] as one atomic ZooKeeper request.
//!
//! This is a thin driver: it decides nothing. What it must get right is the mapping of
//! outcomes: a refused condition (a version check, a node that exists or not) is
//! [`ZkFail::Conflict`] — the operation was not applied — and anything else (a lost
//! connection, an expired session, a timeout) is [`ZkFail::Unknown`] — it may have been
//! applied, and the next read of the group settles it.

use zookeeper_client::{Acls, Client, CreateMode, MultiWriteError, MultiWriteResult, Stat};

use crate::proto::{Event, GroupState, MemberId, ZkFail, ZkOp};
use crate::ZkError;

/// The two nodes of one replication group.
#[derive(Debug, Clone)]
pub struct GroupNodes {
    state_path: String,
    leader_path: String,
    members_path: String,
    me: MemberId,
    acls: Acls<'static>,
}

/// What a read of the group returns: the event for the core and the watches that fire at the
/// next change of either node (the driver reads again then).
pub struct GroupRead {
    /// [`Event::Group`].
    pub event: Event,
    /// Fires when the state node is created, changed or deleted.
    pub state_watch: zookeeper_client::OneshotWatcher,
    /// Fires when the leader node is created or deleted.
    pub leader_watch: zookeeper_client::OneshotWatcher,
}

impl std::fmt::Debug for GroupRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRead")
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl GroupNodes {
    /// The nodes of `group` under `zk_path`, for broker `me`. Creates `zk_path` and the group's
    /// node if missing (open ACLs for the shared parent, `acls` for the group's own nodes).
    pub async fn open(
        zk: &Client,
        zk_path: &str,
        group: &str,
        me: MemberId,
        acls: Acls<'static>,
    ) -> Result<GroupNodes, ZkError> {
        let parent = zk_path.trim_end_matches('/');
        if !parent.is_empty() {
            zk.mkdir(
                parent,
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
            .map_err(ZkError::zk(format!("mkdir {parent}")))?;
        }
        let base = format!("{parent}/{group}");
        let members_path = format!("{base}/members");
        for path in [&base, &members_path] {
            match zk
                .create(path, b"", &CreateMode::Persistent.with_acls(acls))
                .await
            {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => return Err(ZkError::zk(format!("create {path}"))(e)),
            }
        }
        Ok(GroupNodes {
            members_path,
            state_path: format!("{base}/state"),
            leader_path: format!("{base}/leader"),
            me,
            acls,
        })
    }

    /// Reads both nodes, each with a watch. `leader_mine` compares the leader node's owner with
    /// this client's session (it settles a claim whose answer was lost).
    pub async fn read(&self, zk: &Client) -> Result<GroupRead, ZkError> {
        let (state, version, state_watch) = match zk.get_and_watch_data(&self.state_path).await {
            Ok((data, stat, w)) => {
                let state = decode_state(&data).ok_or_else(|| {
                    ZkError::Replication(format!(
                        "{} holds {:?}, not a group state",
                        self.state_path,
                        String::from_utf8_lossy(&data)
                    ))
                })?;
                (Some(state), version_of(&stat), w)
            }
            Err(zookeeper_client::Error::NoNode) => {
                // Watch for its creation instead.
                let (stat, w) = zk
                    .check_and_watch_stat(&self.state_path)
                    .await
                    .map_err(ZkError::zk(format!("watch {}", self.state_path)))?;
                match stat {
                    // Created between the two calls: the watch fires at its next change, and the
                    // core reads a missing state as "create it" — read again instead.
                    Some(_) => return Box::pin(self.read(zk)).await,
                    None => (None, 0, w),
                }
            }
            Err(e) => return Err(ZkError::zk(format!("read {}", self.state_path))(e)),
        };
        let (leader, leader_watch) = zk
            .check_and_watch_stat(&self.leader_path)
            .await
            .map_err(ZkError::zk(format!("watch {}", self.leader_path)))?;
        let session = zk.session_id().0;
        Ok(GroupRead {
            event: Event::Group {
                state,
                version,
                leader_alive: leader.is_some(),
                leader_mine: leader.is_some_and(|s| s.ephemeral_owner == session),
            },
            state_watch,
            leader_watch,
        })
    }

    /// Publishes where this broker accepts replication connections, for this session:
    /// an ephemeral sequential node `members/<id>-<seq>` holding `host:port`. A node of an
    /// earlier session of the same broker may linger until that session expires; lookups take
    /// the newest (highest sequence).
    pub async fn register(&self, zk: &Client, address: &str) -> Result<(), ZkError> {
        let prefix = format!("{}/{}-", self.members_path, self.me);
        zk.create(
            &prefix,
            address.as_bytes(),
            &CreateMode::EphemeralSequential.with_acls(self.acls),
        )
        .await
        .map(|_| ())
        .map_err(ZkError::zk(format!("register {prefix}")))
    }

    /// Where `member` accepts replication connections (its newest registration), `None` if it
    /// has none (not running, or its session expired).
    pub async fn lookup(&self, zk: &Client, member: MemberId) -> Result<Option<String>, ZkError> {
        let children = zk
            .list_children(&self.members_path)
            .await
            .map_err(ZkError::zk(format!("list {}", self.members_path)))?;
        let prefix = format!("{member}-");
        let newest = children
            .iter()
            .filter_map(|c| {
                let seq: u64 = c.strip_prefix(&prefix)?.parse().ok()?;
                Some((seq, c))
            })
            .max();
        let Some((_, name)) = newest else {
            return Ok(None);
        };
        let path = format!("{}/{name}", self.members_path);
        match zk.get_data(&path).await {
            Ok((data, _)) => String::from_utf8(data)
                .map(Some)
                .map_err(|_| ZkError::Replication(format!("{path} does not hold a UTF-8 address"))),
            // Gone between the two reads: its session just ended.
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(ZkError::zk(format!("read {path}"))(e)),
        }
    }

    /// Runs one operation; `Ok` carries the state node's new version.
    pub async fn apply(&self, zk: &Client, op: &ZkOp) -> Result<u64, ZkFail> {
        let persistent = CreateMode::Persistent.with_acls(self.acls);
        let ephemeral = CreateMode::Ephemeral.with_acls(self.acls);
        let me = self.me.to_string();
        match op {
            ZkOp::Create(state) => zk
                .create(&self.state_path, &encode_state(state), &persistent)
                .await
                .map(|(stat, _)| version_of(&stat))
                .map_err(fail_of),
            ZkOp::Set { version, state } => zk
                .set_data(
                    &self.state_path,
                    &encode_state(state),
                    Some(zk_version(*version)?),
                )
                .await
                .map(|stat| version_of(&stat))
                .map_err(fail_of),
            ZkOp::Claim { version, state } | ZkOp::Takeover { version, state } => {
                let mut tx = zk.new_multi_writer();
                let data = encode_state(state);
                // A claim creates the leader node, which fails while another master's exists;
                // a takeover first deletes it — the version check guarantees it is the node of
                // the master whose silence the claimant measured (no claim came in between).
                let prepared = tx
                    .add_set_data(&self.state_path, &data, Some(zk_version(*version)?))
                    .and_then(|()| match op {
                        ZkOp::Takeover { .. } => tx.add_delete(&self.leader_path, None),
                        _ => Ok(()),
                    })
                    .and_then(|()| tx.add_create(&self.leader_path, me.as_bytes(), &ephemeral));
                if prepared.is_err() {
                    // Only an invalid path fails here: nothing was sent.
                    return Err(ZkFail::Conflict);
                }
                match tx.commit().await {
                    Ok(results) => results
                        .iter()
                        .find_map(|r| match r {
                            MultiWriteResult::SetData { stat } => Some(version_of(stat)),
                            _ => None,
                        })
                        .ok_or(ZkFail::Unknown),
                    Err(MultiWriteError::OperationFailed { source, .. }) => Err(fail_of(source)),
                    Err(MultiWriteError::RequestFailed { source }) => Err(fail_of(source)),
                }
            }
        }
    }
}

/// A refused condition is a conflict (not applied); anything else may have been applied.
fn fail_of(e: zookeeper_client::Error) -> ZkFail {
    use zookeeper_client::Error as E;
    match e {
        E::BadVersion | E::NodeExists | E::NoNode | E::NotEmpty => ZkFail::Conflict,
        _ => ZkFail::Unknown,
    }
}

fn version_of(stat: &Stat) -> u64 {
    u64::try_from(stat.version).unwrap_or(0)
}

fn zk_version(v: u64) -> Result<i32, ZkFail> {
    // A version the node cannot have: the check would fail.
    i32::try_from(v).map_err(|_| ZkFail::Conflict)
}

/// The state node's content: one line, readable in `zkCli.sh get`:
/// `epoch=3 leader=2 isr=1,2,3 replicas=3` (`leader=-` before the first claim).
pub fn encode_state(s: &GroupState) -> Vec<u8> {
    let leader = s.leader.map_or_else(|| "-".to_string(), |l| l.to_string());
    let isr: Vec<String> = s.isr.iter().map(|m| m.to_string()).collect();
    format!(
        "epoch={} leader={leader} isr={} replicas={}",
        s.epoch,
        isr.join(","),
        s.replicas
    )
    .into_bytes()
}

/// Parses [`encode_state`]'s output; `None` for anything else (never guesses).
pub fn decode_state(data: &[u8]) -> Option<GroupState> {
    let text = std::str::from_utf8(data).ok()?;
    let mut epoch = None;
    let mut leader = None;
    let mut isr = None;
    let mut replicas = None;
    for field in text.split_ascii_whitespace() {
        let (k, v) = field.split_once('=')?;
        match k {
            "epoch" => epoch = Some(v.parse().ok()?),
            "leader" if v == "-" => leader = Some(None),
            "leader" => leader = Some(Some(v.parse().ok()?)),
            "isr" if v.is_empty() => isr = Some(Vec::new()),
            "isr" => {
                let mut members: Vec<MemberId> = v
                    .split(',')
                    .map(|m| m.parse().ok())
                    .collect::<Option<_>>()?;
                let n = members.len();
                members.sort_unstable();
                members.dedup();
                if members.len() != n {
                    return None;
                }
                isr = Some(members);
            }
            "replicas" => replicas = Some(v.parse().ok()?),
            _ => return None,
        }
    }
    Some(GroupState {
        epoch: epoch?,
        leader: leader?,
        isr: isr?,
        replicas: replicas?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_condition_is_a_conflict() {
        use zookeeper_client::Error as E;
        for e in [E::BadVersion, E::NodeExists, E::NoNode, E::NotEmpty] {
            assert_eq!(fail_of(e), ZkFail::Conflict);
        }
        for e in [E::ConnectionLoss, E::SessionExpired, E::ClientClosed] {
            assert_eq!(fail_of(e), ZkFail::Unknown, "it may have been applied");
        }
    }

    #[test]
    fn the_state_round_trips_and_nothing_else_parses() {
        for s in [
            GroupState {
                epoch: 0,
                leader: None,
                isr: vec![],
                replicas: 3,
            },
            GroupState {
                epoch: 17,
                leader: Some(2),
                isr: vec![1, 2, 5],
                replicas: 5,
            },
        ] {
            assert_eq!(decode_state(&encode_state(&s)), Some(s));
        }
        for bad in [
            "",
            "epoch=1 leader=2 isr=1,2",
            "epoch=1 leader=2 isr=1,2 replicas=3 extra=1",
            "epoch=x leader=2 isr=1,2 replicas=3",
            "epoch=1 leader=2 isr=1,1 replicas=3",
            "epoch=1 leader=2 isr=1,,2 replicas=3",
        ] {
            assert_eq!(decode_state(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
