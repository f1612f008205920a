//! Why a verb string could not be parsed.

/// Why a verb string could not be parsed. Each message names the verb, the option and what to
/// write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerbError {
    /// A quote was opened and never closed.
    #[error("{verb}: unbalanced {quote} quote in {text:?}; close the quote or escape it with a backslash")]
    Unbalanced {
        /// The verb.
        verb: String,
        /// The quote character.
        quote: char,
        /// The verb string.
        text: String,
    },
    /// An option the verb does not have.
    #[error("{verb}: unknown option {option}; known options: {known} (if the payload itself starts with a dash, put `--` before it; see `--exec-help`)")]
    UnknownOption {
        /// The verb.
        verb: String,
        /// The word.
        option: String,
        /// The verb's options.
        known: String,
    },
    /// An option's value is missing or has the wrong type.
    #[error("{verb}: option {option} {problem}")]
    BadValue {
        /// The verb.
        verb: String,
        /// The option (flag or positional name).
        option: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// A required positional or option is absent.
    #[error("{verb}: missing {what}; usage: {usage}")]
    Missing {
        /// The verb.
        verb: String,
        /// What is missing.
        what: String,
        /// The usage line.
        usage: String,
    },
    /// Words left over after every positional took its share.
    #[error("{verb}: unexpected extra words {extra:?}; usage: {usage} (quote arguments that contain spaces)")]
    Extra {
        /// The verb.
        verb: String,
        /// The words.
        extra: Vec<String>,
        /// The usage line.
        usage: String,
    },
    /// Two options of a mutually exclusive group were given, or none of a required group.
    #[error("{verb}: {problem}")]
    OptionGroup {
        /// The verb.
        verb: String,
        /// What is wrong.
        problem: String,
    },
    /// The resource's option list is malformed.
    #[error("{verb}: the option list in the resource's describe `args` is invalid: {reason}")]
    BadSpec {
        /// The verb.
        verb: String,
        /// Why.
        reason: String,
    },
    /// The resource has no option list: it is not a verb.
    #[error("{verb}: resource {kind:?} is not a Directord verb (its describe has no `args` option list)")]
    NotAVerb {
        /// The verb.
        verb: String,
        /// The resource kind looked at.
        kind: String,
    },
}
