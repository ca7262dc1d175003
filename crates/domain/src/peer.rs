//! Who we talk to: AE titles and `AET@host:port` addresses, validated when they are
//! read (config, command line, a row) so the rest of the code holds only valid ones.

use std::fmt;

/// A DICOM AE title: 1-16 characters, no backslash or control characters, not blank.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AeTitle(String);

impl AeTitle {
    pub fn parse(text: &str) -> Result<AeTitle, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("AE title is empty".into());
        }
        if trimmed.len() > 16 {
            return Err(format!("AE title '{trimmed}' is longer than 16 characters"));
        }
        if trimmed.chars().any(|c| c == '\\' || c.is_control() || !c.is_ascii()) {
            return Err(format!("AE title '{trimmed}' has a backslash, control or non-ASCII character"));
        }
        Ok(AeTitle(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A remote application entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub ae_title: AeTitle,
    pub host: String,
    pub port: u16,
}

impl Peer {
    pub fn new(ae_title: &str, host: &str, port: u16) -> Result<Peer, String> {
        if host.trim().is_empty() {
            return Err("host is empty".into());
        }
        Ok(Peer { ae_title: AeTitle::parse(ae_title)?, host: host.trim().to_string(), port })
    }

    /// `AET@host:port`, as the CLI accepts it.
    pub fn parse(text: &str) -> Result<Peer, String> {
        let (ae, address) = text.split_once('@').ok_or_else(|| format!("'{text}' is not AET@host:port"))?;
        let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("'{text}' is not AET@host:port"))?;
        let port: u16 =
            port.parse().ok().filter(|p| *p > 0).ok_or_else(|| format!("'{port}' is not a port (1-65535)"))?;
        Peer::new(ae, host.trim_start_matches('[').trim_end_matches(']'), port)
    }

    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.ae_title, self.address())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let p = Peer::parse("ARCH1@127.0.0.1:4242").unwrap();
        assert_eq!((p.ae_title.as_str(), p.host.as_str(), p.port), ("ARCH1", "127.0.0.1", 4242));
        assert_eq!(p.to_string(), "ARCH1@127.0.0.1:4242");
        for bad in ["ARCH1", "ARCH1@host", "@h:1", "A@h:0", "A@h:70000", "WAY_TOO_LONG_AE_TITLE@h:1", "A\\B@h:1"] {
            assert!(Peer::parse(bad).is_err(), "{bad}");
        }
    }
}
