//! An established association: send a DIMSE message (command + optional data set), receive
//! one (P-DATA fragments reassembled by value type and `is_last`), with timeouts, message
//! IDs and a clean release.

use crate::command::Command;
use crate::error::DimseError;
use crate::link::{ClientLink, Link};
use crate::peer::{AeTitle, Peer};
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};
use std::time::Duration;

/// Transfer syntaxes we propose for identifiers and data sets.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

#[derive(Debug, Clone)]
pub struct ScuOptions {
    pub calling_ae: AeTitle,
    pub connect_timeout: Duration,
    /// Waiting for A-ASSOCIATE-AC/RJ.
    pub association_timeout: Duration,
    /// Longest silence between two messages of one operation.
    pub dimse_timeout: Duration,
    /// The largest PDU we accept. 1 MiB: measured against Orthanc, fewer and larger PDUs
    /// beat DCMTK's 16 KiB default on C-GET (see `scripts/bench-retrieve`).
    pub max_pdu: u32,
    /// DICOM TLS to this peer; None: plain TCP.
    pub tls: Option<priorfetch_tls::ClientTls>,
}

impl ScuOptions {
    pub fn new(calling_ae: AeTitle) -> Self {
        ScuOptions {
            calling_ae,
            connect_timeout: Duration::from_secs(10),
            association_timeout: Duration::from_secs(30),
            dimse_timeout: Duration::from_secs(60),
            max_pdu: 1 << 20,
            tls: None,
        }
    }
}

/// One presentation context to propose: an abstract syntax, its transfer syntaxes, and
/// whether we also want the SCP role (C-GET storage sub-operations).
#[derive(Debug, Clone)]
pub struct ContextRequest {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
    pub scp_role: bool,
}

impl ContextRequest {
    pub fn new(abstract_syntax: &str) -> Self {
        ContextRequest {
            abstract_syntax: abstract_syntax.to_string(),
            transfer_syntaxes: vec![EXPLICIT_VR_LE.to_string(), IMPLICIT_VR_LE.to_string()],
            scp_role: false,
        }
    }
}

/// A message received: its presentation context, command, and data set bytes if any.
pub struct Message {
    pub context_id: u8,
    pub command: Command,
    pub data: Option<Vec<u8>>,
}

/// An established association, ours (client, the default) or a peer's (server side of
/// the C-STORE SCP): both share the message layer below.
pub struct Association<A = ClientLink> {
    inner: Option<A>,
    pub peer: Peer,
    pub options: ScuOptions,
    next_message_id: u16,
    /// Fragments of the next message, kept across PDUs (one PDU may end one message and
    /// start the next).
    pending: std::collections::VecDeque<PDataValue>,
}

impl Association {
    pub async fn connect(
        peer: &Peer,
        options: &ScuOptions,
        contexts: &[ContextRequest],
    ) -> Result<Association, DimseError> {
        let mut request = ClientAssociationOptions::new()
            .calling_ae_title(options.calling_ae.as_str().to_string())
            .called_ae_title(peer.ae_title.as_str().to_string())
            .max_pdu_length(options.max_pdu)
            .connection_timeout(options.connect_timeout)
            .read_timeout(options.dimse_timeout)
            .write_timeout(options.dimse_timeout);
        for c in contexts {
            request = request.with_presentation_context(c.abstract_syntax.clone(), c.transfer_syntaxes.clone());
            if c.scp_role {
                request = request.with_role_selection(c.abstract_syntax.clone(), true, true);
            }
        }
        let address = peer.address();
        let budget = options.connect_timeout + options.association_timeout;
        let establish = async {
            match &options.tls {
                None => request.establish_async(address).await.map(|mut a| {
                    // Nagle would hold back small command PDUs for 40 ms each.
                    let _ = a.inner_stream().set_nodelay(true);
                    ClientLink::Plain(a)
                }),
                Some(tls) => {
                    let request = request.tls_config(tls.config()).server_name(&tls.server_name);
                    request.establish_tls_async(address).await.map(|mut a| {
                        let _ = a.inner_stream().get_ref().0.set_nodelay(true);
                        ClientLink::Tls(a)
                    })
                }
            }
        };
        let inner = tokio::time::timeout(budget, establish)
            .await
            .map_err(|_| DimseError::Timeout { peer: peer.to_string(), what: "the association answer", after: budget })?
            .map_err(|e| map_establish_error(e, peer, options))?;
        Ok(Association::from_established(inner, peer.clone(), options.clone()))
    }
}

impl<A: Link> Association<A> {
    /// Wraps an association dicom-ul established (either side).
    pub fn from_established(inner: A, peer: Peer, options: ScuOptions) -> Self {
        Association { inner: Some(inner), peer, options, next_message_id: 1, pending: Default::default() }
    }

    fn inner(&mut self) -> Result<&mut A, DimseError> {
        self.inner.as_mut().ok_or_else(|| DimseError::Protocol("association already closed".into()))
    }

    /// The accepted context for an abstract syntax, and its transfer syntax.
    pub fn context_for(&self, abstract_syntax: &str) -> Option<(u8, String)> {
        self.inner.as_ref()?.presentation_contexts().iter().find_map(|pc| {
            (pc.abstract_syntax == abstract_syntax && pc.reason == PresentationContextResultReason::Acceptance)
                .then(|| (pc.id, pc.transfer_syntax.clone()))
        })
    }

    /// Every accepted context: (id, abstract syntax, transfer syntax).
    pub fn accepted_contexts(&self) -> Vec<(u8, String, String)> {
        self.inner
            .as_ref()
            .map(|a| {
                a.presentation_contexts()
                    .iter()
                    .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
                    .map(|pc| (pc.id, pc.abstract_syntax.clone(), pc.transfer_syntax.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Sends a command and, when given, its data set (split to the peer's max PDU).
    pub async fn send(&mut self, context_id: u8, command: &Command, data: Option<&[u8]>) -> Result<(), DimseError> {
        let peer = self.peer.to_string();
        let command_bytes = command.encode()?;
        let max = self.inner()?.peer_max_pdu_length();
        // 6 bytes of PDV header + 6 of PDU header; 0 means "no limit" per PS3.8.
        let chunk = if max == 0 { 1 << 20 } else { (max as usize).saturating_sub(12).max(256) };
        let inner = self.inner()?;
        send_fragments(inner, context_id, PDataValueType::Command, &command_bytes, chunk, &peer).await?;
        if let Some(data) = data {
            send_fragments(inner, context_id, PDataValueType::Data, data, chunk, &peer).await?;
        }
        Ok(())
    }

    /// Receives the next whole message (data set in memory: identifiers, responses).
    pub async fn receive(&mut self) -> Result<Message, DimseError> {
        let (context_id, command) = self.receive_command().await?;
        if !command.has_data_set() {
            return Ok(Message { context_id, command, data: None });
        }
        let mut data = Vec::new();
        self.receive_data(|chunk| {
            data.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(Message { context_id, command, data: Some(data) })
    }

    /// Receives the next command; its data set, if it has one, must then be read with
    /// [`Association::receive_data`].
    pub async fn receive_command(&mut self) -> Result<(u8, Command), DimseError> {
        let mut command_bytes: Vec<u8> = Vec::new();
        loop {
            let fragment = self.next_fragment().await?;
            if fragment.value_type != PDataValueType::Command {
                return Err(DimseError::Protocol("data fragment where a command was expected".into()));
            }
            command_bytes.extend_from_slice(&fragment.data);
            if command_bytes.len() > 64 * 1024 {
                return Err(DimseError::Protocol("command set larger than 64 KiB".into()));
            }
            if fragment.is_last {
                return Ok((fragment.presentation_context_id, Command::decode(&command_bytes)?));
            }
        }
    }

    /// Streams the data set that follows a command to `on_chunk`, fragment by fragment, so
    /// a large instance never has to sit in memory whole.
    pub async fn receive_data(
        &mut self,
        mut on_chunk: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, DimseError> {
        let mut total = 0u64;
        loop {
            let fragment = self.next_fragment().await?;
            if fragment.value_type != PDataValueType::Data {
                return Err(DimseError::Protocol("command fragment inside a data set".into()));
            }
            total += fragment.data.len() as u64;
            on_chunk(&fragment.data).map_err(|e| DimseError::Io(format!("writing received data: {e}")))?;
            if fragment.is_last {
                return Ok(total);
            }
        }
    }

    async fn next_fragment(&mut self) -> Result<PDataValue, DimseError> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Ok(f);
            }
            let timeout = self.options.dimse_timeout;
            let peer = self.peer.to_string();
            let inner = self.inner()?;
            let pdu = tokio::time::timeout(timeout, Link::receive(inner))
                .await
                .map_err(|_| DimseError::Timeout { peer: peer.clone(), what: "a DIMSE message", after: timeout })?
                .map_err(|e| DimseError::Io(e.to_string()))?;
            match pdu {
                Pdu::PData { data } => self.pending.extend(data),
                Pdu::AbortRQ { .. } => {
                    self.inner = None;
                    return Err(DimseError::Aborted { peer, during: " during the operation".into() });
                }
                Pdu::ReleaseRQ => {
                    let _ = Link::send(inner, &Pdu::ReleaseRP).await;
                    self.inner = None;
                    return Err(DimseError::Released { peer });
                }
                other => return Err(DimseError::Protocol(format!("unexpected PDU {}", pdu_name(&other)))),
            }
        }
    }

    /// A-RELEASE; an association that already broke is just dropped.
    pub async fn release(mut self) {
        if let Some(inner) = self.inner.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), Link::release(inner)).await;
        }
    }

    /// A-ABORT (after a protocol error, or to stop at once); the association is closed
    /// afterwards (any further use is an error).
    pub async fn abort(&mut self) {
        if let Some(inner) = self.inner.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), Link::abort(inner)).await;
        }
    }
}

async fn send_fragments<A: Link>(
    inner: &mut A,
    context_id: u8,
    value_type: PDataValueType,
    bytes: &[u8],
    chunk: usize,
    peer: &str,
) -> Result<(), DimseError> {
    let mut pieces = bytes.chunks(chunk).peekable();
    if pieces.peek().is_none() {
        let pdu = Pdu::PData {
            data: vec![PDataValue { presentation_context_id: context_id, value_type, is_last: true, data: Vec::new() }],
        };
        return Link::send(inner, &pdu).await.map_err(|e| DimseError::Io(format!("sending to {peer}: {e}")));
    }
    while let Some(piece) = pieces.next() {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: value_type.clone(),
                is_last: pieces.peek().is_none(),
                data: piece.to_vec(),
            }],
        };
        Link::send(inner, &pdu).await.map_err(|e| DimseError::Io(format!("sending to {peer}: {e}")))?;
    }
    Ok(())
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
        Pdu::Unknown { .. } => "unknown",
    }
}

fn map_establish_error(e: dicom_ul::association::Error, peer: &Peer, options: &ScuOptions) -> DimseError {
    use dicom_ul::association::Error as E;
    use dicom_ul::pdu::{AssociationRJResult, AssociationRJSource};
    if let Some(problem) = priorfetch_tls::diagnose(&e) {
        return DimseError::Tls { peer: peer.to_string(), problem };
    }
    match e {
        // dicom-ul (with TLS support built in) answers TlsNotSupported to ANY failure to
        // read the A-ASSOCIATE answer on a plain connection, a peer restarting included:
        // that stays retryable, with the TLS possibility in the hint.
        E::TlsNotSupported if options.tls.is_none() => DimseError::Other {
            message: format!("association with {peer}: the connection ended during the negotiation"),
            hint: format!(
                "{peer} closed the connection (or answered with something that is not DICOM) before accepting: \
                 it may be restarting; if this port expects DICOM TLS, set this peer's tls"
            ),
            retryable: true,
            wait: None,
        },
        E::TlsHandshake { .. } | E::TlsNotSupported => {
            let problem = match &options.tls {
                Some(tls) if !tls.sends_client_cert => priorfetch_tls::TlsProblem::ClosedWithoutClientCert,
                _ => priorfetch_tls::TlsProblem::Closed,
            };
            DimseError::Tls { peer: peer.to_string(), problem }
        }
        E::Rejected { association_rj, .. } => DimseError::Rejected {
            peer: peer.to_string(),
            reason: match &association_rj.source {
                AssociationRJSource::ServiceUser(r) => r.to_string(),
                AssociationRJSource::ServiceProviderASCE(r) => r.to_string(),
                AssociationRJSource::ServiceProviderPresentation(r) => r.to_string(),
            },
            permanent: association_rj.result == AssociationRJResult::Permanent,
            called_ae: peer.ae_title.to_string(),
            calling_ae: options.calling_ae.to_string(),
        },
        E::Connect { source, .. } => DimseError::Connect { address: peer.address(), reason: source.to_string() },
        E::NoAcceptedPresentationContexts { .. } => {
            DimseError::NoContext { peer: peer.to_string(), what: "any proposed service".into() }
        }
        E::Aborted { .. } => {
            DimseError::Aborted { peer: peer.to_string(), during: " during association negotiation".into() }
        }
        other => {
            let text = other.to_string();
            if text.contains("timed out") || text.contains("timeout") {
                DimseError::Timeout {
                    peer: peer.to_string(),
                    what: "the association answer",
                    after: options.association_timeout,
                }
            } else {
                DimseError::Io(format!("association with {peer}: {text}"))
            }
        }
    }
}
