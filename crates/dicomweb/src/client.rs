//! The HTTP side: one `reqwest` client per archive (connection reuse, HTTP/1.1 and 2),
//! authentication, timeouts, and errors that name the fix.

use std::time::Duration;

/// How requests authenticate. Secrets are never logged or printed (`Debug` hides them).
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
}

impl From<&priorfetch_config::WebAuth> for Auth {
    fn from(auth: &priorfetch_config::WebAuth) -> Auth {
        use priorfetch_config::WebAuth;
        match auth {
            WebAuth::None => Auth::None,
            WebAuth::Basic { user, password } => {
                Auth::Basic { user: user.clone(), password: password.expose().to_string() }
            }
            WebAuth::Bearer { token } => Auth::Bearer(token.expose().to_string()),
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("none"),
            Auth::Basic { user, .. } => write!(f, "basic({user}, ***)"),
            Auth::Bearer(_) => f.write_str("bearer(***)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DicomWebError {
    #[error("{url}: cannot connect: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: HTTP {status} (authentication refused)")]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: HTTP {status} (busy; retry after {retry_after:?})")]
    Busy { url: String, status: u16, retry_after: Option<Duration> },
    #[error("{url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url}: the answer is not what DICOMweb sends: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{url}: the body ended early after {complete} complete instances (connection cut?)")]
    Truncated { url: String, complete: usize },
    #[error("writing a received instance: {0}")]
    Io(String),
    /// The HTTPS handshake failed: permanent until a certificate or setting changes.
    #[error("{url}: TLS failed: {problem}")]
    Tls { url: String, problem: priorfetch_tls::TlsProblem },
}

impl DicomWebError {
    /// Worth retrying later (the same request may succeed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DicomWebError::Unreachable { .. }
                | DicomWebError::Timeout { .. }
                | DicomWebError::Busy { .. }
                | DicomWebError::Truncated { .. }
        ) || matches!(self, DicomWebError::Status { status, .. } if *status >= 500)
    }

    /// One line saying what to check.
    pub fn hint(&self) -> String {
        let text = match self {
            DicomWebError::Unreachable { .. } => "check base_url (scheme, host, port, path) and the firewall",
            DicomWebError::Timeout { .. } => {
                "the archive is slow or the path drops packets; raise the timeout or check the network"
            }
            DicomWebError::Unauthorized { .. } => "check archives[i].auth (user and password, or the bearer token)",
            DicomWebError::Busy { .. } => "the archive asks us to slow down; the job is retried later",
            DicomWebError::Status { status: 404, .. } => {
                "check base_url: the DICOMweb root (e.g. http://host:8042/dicom-web)"
            }
            DicomWebError::Status { .. } => "see the archive's log for this request",
            DicomWebError::Malformed { .. } => "the archive's DICOMweb answer is malformed; report it to its vendor",
            DicomWebError::Truncated { .. } => {
                "the connection was cut mid-body; the missing instances are fetched again"
            }
            DicomWebError::Io(_) => "check the spool folder's space and permissions",
            DicomWebError::Tls { problem, .. } => return problem.hint("this peer's tls"),
        };
        text.to_string()
    }
}

/// One archive's DICOMweb root, e.g. `http://host:8042/dicom-web`.
#[derive(Clone, Debug)]
pub struct DicomWebClient {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) auth: Auth,
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of an answer.
    pub read_timeout: Duration,
    /// HTTPS: the CAs to trust besides the system's, and a client certificate.
    pub tls: Option<priorfetch_config::TlsConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { connect_timeout: Duration::from_secs(10), read_timeout: Duration::from_secs(60), tls: None }
    }
}

/// A `tls` block applied to HTTPS: extra CAs (`ca`), a client certificate (`cert` and
/// `key`). Errors name the file, never its content.
fn with_tls(
    mut builder: reqwest::ClientBuilder,
    tls: &priorfetch_config::TlsConfig,
) -> Result<reqwest::ClientBuilder, String> {
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| format!("tls: {}: {e}", path.display()));
    if let Some(ca) = &tls.ca {
        let pem = read(ca)?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("tls.ca {}: {e}", ca.display()))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let mut pem = read(cert)?;
        pem.extend_from_slice(b"\n");
        pem.extend_from_slice(&read(key)?);
        let identity =
            reqwest::Identity::from_pem(&pem).map_err(|e| format!("tls.cert/tls.key {}: {e}", cert.display()))?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

impl DicomWebClient {
    pub fn new(base_url: &str, auth: Auth, options: &ClientOptions) -> Result<DicomWebClient, DicomWebError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(DicomWebError::Unreachable {
                url: base,
                reason: "base_url must start with http:// or https://".into(),
            });
        }
        let unusable = |reason: String| DicomWebError::Unreachable { url: base.clone(), reason };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &options.tls {
            builder = with_tls(builder, tls).map_err(unusable)?;
        }
        let http = builder.build().map_err(|e| unusable(e.to_string()))?;
        Ok(DicomWebClient { http, base, auth })
    }

    /// The client of a configured DICOMweb archive (`base_url`, `auth`).
    pub fn for_archive(
        archive: &priorfetch_config::ArchiveConfig,
        options: &ClientOptions,
    ) -> Result<DicomWebClient, DicomWebError> {
        let base = archive.base_url.as_deref().ok_or_else(|| DicomWebError::Unreachable {
            url: String::new(),
            reason: format!("archive '{}': base_url is required for DICOMweb", archive.name),
        })?;
        let options = ClientOptions { tls: archive.tls.clone(), ..options.clone() };
        DicomWebClient::new(base, Auth::from(&archive.auth), &options)
    }

    /// The client of a DICOMweb `[destination]` (`base_url`, `auth`).
    pub fn for_destination(
        destination: &priorfetch_config::DestinationConfig,
        options: &ClientOptions,
    ) -> Result<DicomWebClient, DicomWebError> {
        let base = destination.base_url.as_deref().unwrap_or_default();
        let options = ClientOptions { tls: destination.tls.clone(), ..options.clone() };
        DicomWebClient::new(base, Auth::from(&destination.auth), &options)
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorised(self.http.get(url))
    }

    pub(crate) fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorised(self.http.post(url))
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::Bearer(token) => request.bearer_auth(token),
        }
    }

    /// Sends; a status that is not a success becomes the matching error.
    pub(crate) async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DicomWebError> {
        let response = request.send().await.map_err(|e| transport(url, e))?;
        let full_url = url;
        let url = &redacted(url);
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let url = url.to_string();
        Err(match status {
            401 | 403 => DicomWebError::Unauthorized { url, status },
            429 | 503 => DicomWebError::Busy { url, status, retry_after },
            _ => {
                let body = without_query_values(&response.text().await.unwrap_or_default(), full_url);
                DicomWebError::Status { url, status, body: body.chars().take(200).collect() }
            }
        })
    }
}

pub(crate) fn transport(url: &str, e: reqwest::Error) -> DicomWebError {
    let url = redacted(url);
    // the rustls error is not always reachable as a type through reqwest's wrapping;
    // its text is
    if let Some(problem) =
        priorfetch_tls::diagnose(&e).or_else(|| priorfetch_tls::problem::diagnose_text(&root_cause(&e)))
    {
        return DicomWebError::Tls { url, problem };
    }
    if e.is_timeout() {
        DicomWebError::Timeout { url, after: Duration::ZERO }
    } else if e.is_connect() {
        DicomWebError::Unreachable { url, reason: root_cause(&e) }
    } else if e.is_body() || e.is_decode() {
        DicomWebError::Truncated { url, complete: 0 }
    } else {
        DicomWebError::Unreachable { url, reason: root_cause(&e) }
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    cause
}

/// A URL fit for errors and logs: no query string (QIDO keys hold patient IDs) and no UIDs
/// (`/studies/<uid>/series/<uid>`).
pub fn redacted(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.split('/')
        .map(|segment| {
            let uid = segment.len() > 8 && segment.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if uid { "<uid>" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// An error body with the request's query values (patient IDs of a QIDO search) blanked:
/// archives often echo the query in their error text, and errors are logged.
fn without_query_values(body: &str, url: &str) -> String {
    let mut body = body.to_string();
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    for pair in query.split('&') {
        let value = pair.split_once('=').map(|(_, v)| v).unwrap_or("");
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        if value.len() >= 2 {
            body = body.replace(value.as_ref(), "<redacted>");
        }
    }
    body
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_bodies_lose_the_query_values() {
        let url = "http://pacs/dicom-web/studies?PatientID=MRN%20123&limit=200";
        assert_eq!(super::without_query_values("bad PatientID MRN 123", url), "bad PatientID <redacted>");
    }

    #[test]
    fn urls_in_errors_hold_no_patient_data() {
        assert_eq!(
            super::redacted("http://pacs:8042/dicom-web/studies?PatientID=MRN123&limit=200"),
            "http://pacs:8042/dicom-web/studies"
        );
        assert_eq!(
            super::redacted("https://pacs/dicom-web/studies/1.2.840.113619.2.1/series/1.2.840.113619.2.2"),
            "https://pacs/dicom-web/studies/<uid>/series/<uid>"
        );
    }
}
