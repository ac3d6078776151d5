//! A log's epoch history (KIP-101's leader-epoch cache): the first lsn of every epoch present in
//! the log. Two logs hold the same entry at an lsn exactly when both name the same epoch there,
//! because only the master of an epoch creates entries of that epoch and it never rewrites one.

/// `(epoch, first_lsn)` pairs, strictly increasing in both, describing a log `1..=last`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    spans: Vec<(u64, u64)>,
}

impl EpochHistory {
    /// A history from its pairs; `None` if they are not strictly increasing in both components.
    pub fn from_spans(spans: Vec<(u64, u64)>) -> Option<EpochHistory> {
        let ordered = spans.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let positive = spans.iter().all(|s| s.1 >= 1);
        (ordered && positive).then_some(EpochHistory { spans })
    }

    /// The pairs, for a `Hello` or a snapshot's end.
    pub fn spans(&self) -> &[(u64, u64)] {
        &self.spans
    }

    /// Records that the entry at `lsn` (the new last) belongs to `epoch`.
    pub fn append(&mut self, epoch: u64, lsn: u64) {
        match self.spans.last() {
            Some(&(e, _)) if e == epoch => {}
            _ => self.spans.push((epoch, lsn)),
        }
    }

    /// Forgets every entry after `last`.
    pub fn truncate(&mut self, last: u64) {
        while self.spans.last().is_some_and(|s| s.1 > last) {
            self.spans.pop();
        }
    }

    /// The epoch of the entry at `lsn` (0 for lsn 0, the empty prefix).
    pub fn epoch_at(&self, lsn: u64) -> u64 {
        if lsn == 0 {
            return 0;
        }
        let i = self.spans.partition_point(|s| s.1 <= lsn);
        if i == 0 {
            0
        } else {
            self.spans[i - 1].0
        }
    }

    /// The highest epoch in the log.
    pub fn last_epoch(&self) -> u64 {
        self.spans.last().map_or(0, |s| s.0)
    }

    /// The longest common prefix of this log (ending at `last`) and another (`other`, ending at
    /// `other_last`): both hold identical entries at `1..=result`.
    pub fn divergence(&self, last: u64, other: &EpochHistory, other_last: u64) -> u64 {
        let end = last.min(other_last);
        // The epoch functions are step functions; they can first differ only at a boundary.
        let mut boundaries: Vec<u64> = self
            .spans
            .iter()
            .chain(other.spans.iter())
            .map(|s| s.1)
            .filter(|b| *b <= end)
            .collect();
        boundaries.push(1);
        boundaries.sort_unstable();
        boundaries.dedup();
        for b in boundaries {
            if self.epoch_at(b) != other.epoch_at(b) {
                return b - 1;
            }
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(spans: &[(u64, u64)]) -> EpochHistory {
        EpochHistory::from_spans(spans.to_vec()).unwrap()
    }

    #[test]
    fn divergence_is_the_last_lsn_where_epochs_agree() {
        // Master: epoch 1 for 1..=10, epoch 3 from 11. Deposed: epoch 1 for 1..=7, epoch 2 from 8.
        let m = h(&[(1, 1), (3, 11)]);
        let d = h(&[(1, 1), (2, 8)]);
        assert_eq!(m.divergence(20, &d, 15), 7);
        assert_eq!(d.divergence(15, &m, 20), 7);
        // A plain prefix diverges nowhere.
        assert_eq!(m.divergence(20, &h(&[(1, 1)]), 9), 9);
        // Nothing in common.
        assert_eq!(m.divergence(20, &h(&[(2, 1)]), 3), 0);
        assert_eq!(m.divergence(20, &EpochHistory::default(), 0), 0);
    }

    #[test]
    fn truncate_and_append_keep_the_spans() {
        let mut x = h(&[(1, 1), (2, 5), (4, 9)]);
        x.truncate(6);
        assert_eq!(x.spans(), &[(1, 1), (2, 5)]);
        x.truncate(4);
        assert_eq!(x.spans(), &[(1, 1)]);
        x.append(5, 5);
        assert_eq!(x.epoch_at(4), 1);
        assert_eq!(x.epoch_at(5), 5);
        assert!(EpochHistory::from_spans(vec![(2, 1), (1, 3)]).is_none());
    }
}
