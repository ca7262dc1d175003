//! Servers: the C-STORE SCP.
pub mod store;
