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

mod error;
pub mod literal;
pub mod parse;
pub mod spec;

pub use error::VerbError;
pub use literal::literal;
pub use parse::{parse, split_words, strtobool, Parsed, Word};
pub use spec::{common_options, Nargs, OptSpec, OptType, OptionGroup, VerbSpec};
