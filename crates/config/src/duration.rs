//! Human durations in config (`"30s"`, `"12h"`, `"5y"`): the domain's, shared with `[[rules]]`.

pub use priorfetch_domain::duration::{deserialize, serialize};
