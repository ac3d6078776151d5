//! Why a selector was refused.

/// Why [`crate::Selector::parse`] refused a selector.
///
/// Positions are zero-based *character* (Unicode scalar) indexes into the
/// selector text, so they can be shown to a user as a column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text is not a valid selector; `message` says what was expected.
    #[error("invalid selector at character {position}: {message}")]
    Syntax {
        /// Zero-based character index of the offending token.
        position: usize,
        /// What was found and what was expected instead.
        message: String,
    },
    /// The text is longer than [`crate::SELECTOR_BYTES_MAX`].
    #[error("selector is {length_bytes} bytes long; the limit is {length_bytes_max}")]
    TooLong {
        /// Length of the refused text in UTF-8 bytes.
        length_bytes: usize,
        /// The limit it exceeded.
        length_bytes_max: usize,
    },
    /// Parentheses, prefix operators or operator chains nest deeper than
    /// [`crate::SELECTOR_DEPTH_MAX`].
    #[error("selector nests deeper than {depth_max} levels at character {position}")]
    TooDeep {
        /// Zero-based character index where the limit was crossed.
        position: usize,
        /// The limit it exceeded.
        depth_max: usize,
    },
}
