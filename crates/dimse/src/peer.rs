//! Who we talk to: the domain's AE title and peer (validated once, where the config is
//! read or a command line is parsed).

pub use priorfetch_domain::{AeTitle, Peer};
