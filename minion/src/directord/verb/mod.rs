//! Verb strings (`RUN: --timeout 5 echo hi`) parsed with a resource's option list.
//!
//! A resource that is a Directord verb publishes its options in the `args` field of its
//! `describe` document. The shape (JSON) is a [`VerbSpec`]:
//!
//! ```json
//! {"help": "Process run commands", "cacheable": true, "transfer": false,
//!  "options": [
//!    {"name": "no_block", "flags": ["--no-block"], "type": "flag", "help": "Run a command in 'fire and forget' mode."},
//!    {"name": "retry", "flags": ["--retry"], "type": "int", "default": 1, "help": "Number of times to retry"},
//!    {"name": "command", "type": "str", "nargs": "rest", "help": "the command, run with /bin/sh -c"}],
//!  "groups": [{"name": "running", "options": ["reloaded", "restarted"], "required": false}]}
//! ```
//!
//! An option without `flags` is positional. `type` is `flag` (a switch, false unless given),
//! `str`, `int`, `float` or `literal` (a Python-style literal: `['a']`, `{"a": 1}`, `1.2`, or
//! else the text itself). `nargs`: absent (one word), `"?"`, `"*"`, `"+"` (lists of words) or
//! `"rest"` (the rest of the verb string exactly as written, quotes and spacing kept). A bare
//! JSON array is accepted as the `options` list alone. The common options ([`common_options`])
//! are added to every verb.
//!
//! Parsing splits words the way a POSIX shell does (quotes group, backslash escapes). Options
//! are recognised only before the payload; `--` ends them.
//!
//! - [`spec`]: the option list ([`VerbSpec`], [`OptSpec`]) and `--exec-help`.
//! - [`parse`](mod@parse): verb-string parsing ([`parse()`], [`split_words`]).
//! - [`literal`](mod@literal): Python-style literals ([`literal()`]).

pub mod literal;
pub mod parse;
pub mod spec;

pub use literal::literal;
pub use parse::{parse, split_words, strtobool, Parsed, Word};
pub use spec::{common_options, Group, Nargs, OptSpec, OptType, VerbSpec};

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
    Group {
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
