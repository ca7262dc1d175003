//! How the mover reaches an archive: our calling AE and timeouts, the archive's address.

use crate::Ctx;
use priorfetch_config::ArchiveConfig;
use priorfetch_dimse::{AeTitle, DimseError, Peer, ScuOptions};

pub(crate) fn scu_options(ctx: &Ctx) -> Result<ScuOptions, DimseError> {
    let ae = AeTitle::parse(&ctx.config.service.ae_title)
        .map_err(|e| DimseError::Encode(format!("service.ae_title: {e}")))?;
    let mut options = ScuOptions::new(ae);
    options.dimse_timeout = ctx.config.mover.dimse_timeout;
    Ok(options)
}

pub(crate) fn archive_peer(archive: &ArchiveConfig) -> Result<Peer, DimseError> {
    Peer::new(&archive.ae_title, &archive.host, archive.port as u16)
        .map_err(|e| DimseError::Encode(format!("archive '{}': {e}", archive.name)))
}
