//! The connection under an association: plain TCP or DICOM TLS. dicom-ul types the
//! association by its stream; these two enums give the message layer one type per side,
//! so everything above it works the same over either.

use dicom_ul::association::client::AsyncTlsStream as ClientTlsStream;
use dicom_ul::association::server::AsyncTlsStream as ServerTlsStream;
use dicom_ul::association::{AsyncAssociation, AsyncClientAssociation, AsyncServerAssociation};
use dicom_ul::pdu::{Pdu, PresentationContextNegotiated};
use std::future::Future;
use tokio::net::TcpStream;

type UlResult<T> = Result<T, dicom_ul::association::Error>;

/// What the message layer needs of an established association.
pub trait Link: Send {
    fn send(&mut self, pdu: &Pdu) -> impl Future<Output = UlResult<()>> + Send;
    fn receive(&mut self) -> impl Future<Output = UlResult<Pdu>> + Send;
    fn release(self) -> impl Future<Output = UlResult<()>> + Send;
    fn abort(self) -> impl Future<Output = UlResult<()>> + Send;
    fn presentation_contexts(&self) -> &[PresentationContextNegotiated];
    fn peer_max_pdu_length(&self) -> u32;
    fn peer_ae_title(&self) -> &str;
}

// One per connection, created once and then used in place: the TLS variant's size does
// not matter.
/// An association we opened.
#[allow(clippy::large_enum_variant)]
pub enum ClientLink {
    Plain(AsyncClientAssociation<TcpStream>),
    Tls(AsyncClientAssociation<ClientTlsStream>),
}

/// An association a peer opened to one of our SCPs.
#[allow(clippy::large_enum_variant)]
pub enum ServerLink {
    Plain(AsyncServerAssociation<TcpStream>),
    Tls(AsyncServerAssociation<ServerTlsStream>),
}

macro_rules! delegate {
    ($link:ty) => {
        impl Link for $link {
            async fn send(&mut self, pdu: &Pdu) -> UlResult<()> {
                match self {
                    Self::Plain(a) => AsyncAssociation::send(a, pdu).await,
                    Self::Tls(a) => AsyncAssociation::send(a, pdu).await,
                }
            }
            async fn receive(&mut self) -> UlResult<Pdu> {
                match self {
                    Self::Plain(a) => AsyncAssociation::receive(a).await,
                    Self::Tls(a) => AsyncAssociation::receive(a).await,
                }
            }
            async fn release(self) -> UlResult<()> {
                match self {
                    Self::Plain(a) => AsyncAssociation::release(a).await,
                    Self::Tls(a) => AsyncAssociation::release(a).await,
                }
            }
            async fn abort(self) -> UlResult<()> {
                match self {
                    Self::Plain(a) => AsyncAssociation::abort(a).await,
                    Self::Tls(a) => AsyncAssociation::abort(a).await,
                }
            }
            fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
                match self {
                    Self::Plain(a) => a.presentation_contexts(),
                    Self::Tls(a) => a.presentation_contexts(),
                }
            }
            fn peer_max_pdu_length(&self) -> u32 {
                use dicom_ul::association::Association as _;
                match self {
                    Self::Plain(a) => a.peer_max_pdu_length(),
                    Self::Tls(a) => a.peer_max_pdu_length(),
                }
            }
            fn peer_ae_title(&self) -> &str {
                use dicom_ul::association::Association as _;
                match self {
                    Self::Plain(a) => a.peer_ae_title(),
                    Self::Tls(a) => a.peer_ae_title(),
                }
            }
        }
    };
}

delegate!(ClientLink);
delegate!(ServerLink);
