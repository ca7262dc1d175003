//! Checks 2-4: the association (rejections decoded), presentation contexts, C-ECHO; and
//! the session the later checks run their requests on (reconnecting after an abort).

use crate::finding::{Check, Report};
use crate::target::{DoctorContext, Role, Target};
use dicom_object::InMemDicomObject;
use priorfetch_config::RetrieveMethod;
use priorfetch_dimse::command::{Command, field, tags};
use priorfetch_dimse::scu::{FindOutcome, VERIFICATION};
use priorfetch_dimse::{Association, ContextRequest, DimseError, QueryModel, ScuOptions};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

pub const STUDY_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
pub const STUDY_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
pub const STUDY_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
pub const PATIENT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
pub const PATIENT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
pub const CT_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// What we propose, with the names findings use.
fn proposed(role: &Role) -> Vec<(&'static str, &'static str)> {
    match role {
        Role::Archive { .. } => vec![
            ("verification", VERIFICATION),
            ("study-root find", STUDY_FIND),
            ("study-root move", STUDY_MOVE),
            ("study-root get", STUDY_GET),
            ("patient-root find", PATIENT_FIND),
            ("patient-root move", PATIENT_MOVE),
        ],
        Role::Destination { .. } => {
            vec![("verification", VERIFICATION), ("study-root find", STUDY_FIND), ("ct storage", CT_STORAGE)]
        }
    }
}

/// An association that is re-established when the previous one broke.
pub(crate) struct Session {
    target: Target,
    options: ScuOptions,
    contexts: Vec<ContextRequest>,
    assoc: Option<Association>,
}

impl Session {
    pub fn new(target: &Target, ctx: &DoctorContext) -> Session {
        let mut options = ScuOptions::new(ctx.calling_ae.clone());
        options.connect_timeout = ctx.connect_timeout;
        options.association_timeout = ctx.association_timeout;
        options.dimse_timeout = ctx.dimse_timeout;
        let contexts = proposed(&target.role).into_iter().map(|(_, uid)| ContextRequest::new(uid)).collect();
        Session { target: target.clone(), options, contexts, assoc: None }
    }

    pub async fn connect(&mut self) -> Result<&mut Association, DimseError> {
        if self.assoc.is_none() {
            self.assoc = Some(Association::connect(&self.target.peer, &self.options, &self.contexts).await?);
        }
        Ok(self.assoc.as_mut().expect("set above"))
    }

    /// After an error that leaves the association unusable, drop it (the next request
    /// reconnects).
    pub async fn after_error(&mut self, e: &DimseError) {
        let broken = matches!(
            e,
            DimseError::Aborted { .. }
                | DimseError::Released { .. }
                | DimseError::Timeout { .. }
                | DimseError::Io(_)
                | DimseError::Protocol(_)
        );
        if broken && let Some(mut assoc) = self.assoc.take() {
            assoc.abort().await;
        }
    }

    pub fn options(&self) -> &ScuOptions {
        &self.options
    }

    pub fn accepted(&self, uid: &str) -> bool {
        self.assoc.as_ref().is_some_and(|a| a.context_for(uid).is_some())
    }

    /// C-FIND counting matches itself, so the count survives a failure status.
    pub async fn find(
        &mut self,
        model: QueryModel,
        query: &InMemDicomObject,
        cancel_after: Option<usize>,
        mut on_match: impl FnMut(&InMemDicomObject) -> ControlFlow<()>,
    ) -> (usize, Result<FindOutcome, DimseError>) {
        let mut count = 0usize;
        let result = match self.connect().await {
            Ok(assoc) => {
                assoc
                    .find(model, query, cancel_after, |m| {
                        count += 1;
                        on_match(&m)
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.after_error(e).await;
        }
        (count, result)
    }

    pub async fn echo(&mut self) -> Result<Duration, DimseError> {
        let result = async {
            let assoc = self.connect().await?;
            let peer = assoc.peer.to_string();
            let (pc, _) = assoc
                .context_for(VERIFICATION)
                .ok_or_else(|| DimseError::NoContext { peer: peer.clone(), what: "Verification (C-ECHO)".into() })?;
            let started = Instant::now();
            let id = assoc.next_message_id();
            let mut rq = Command::new(field::C_ECHO_RQ);
            rq.put_u16(tags::MESSAGE_ID, id).put_uid(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION);
            assoc.send(pc, &rq, None).await?;
            let rsp = assoc.receive().await?;
            match rsp.command.status() {
                Some(0) => Ok(started.elapsed()),
                status => {
                    let status = status.unwrap_or(0xFFFF);
                    Err(DimseError::Status {
                        operation: "C-ECHO",
                        status,
                        meaning: priorfetch_dimse::error::status_meaning(status),
                        comment: String::new(),
                        move_destination: None,
                        peer,
                    })
                }
            }
        }
        .await;
        if let Err(e) = &result {
            self.after_error(e).await;
        }
        result
    }

    pub async fn move_to(
        &mut self,
        query: &InMemDicomObject,
        destination: &priorfetch_dimse::AeTitle,
    ) -> Result<priorfetch_dimse::RetrieveOutcome, DimseError> {
        let result = match self.connect().await {
            Ok(assoc) => assoc.retrieve_move(QueryModel::StudyRoot, query, destination, |_| {}, None).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.after_error(e).await;
        }
        result
    }

    /// Releases the current association (the next request opens a new one): a probe that
    /// needs its own association must not hold two against an archive capped at one.
    pub async fn release_current(&mut self) {
        if let Some(assoc) = self.assoc.take() {
            assoc.release().await;
        }
    }

    pub async fn close(mut self) {
        if let Some(assoc) = self.assoc.take() {
            assoc.release().await;
        }
    }
}

/// The fix for a peer that will not let our calling AE in.
pub(crate) fn calling_ae_fix(target: &Target, ctx: &DoctorContext) -> String {
    let who = if matches!(target.role, Role::Destination { .. }) { "destination" } else { "archive" };
    format!(
        "add {} (service.ae_title) with this host's address to the {who}'s AE table with query/retrieve rights \
         (Orthanc: a DicomModalities entry with AllowFind/AllowMove/AllowGet), or set service.ae_title to the AE it knows",
        ctx.calling_ae
    )
}

/// Check 2. Returns the session when the association was accepted.
pub(crate) async fn associate(target: &Target, ctx: &DoctorContext, report: &mut Report) -> Option<Session> {
    let mut session = Session::new(target, ctx);
    let key = &target.key;
    if let Some(settings) = &target.tls {
        match priorfetch_tls::ClientTls::load(settings, &target.name, &target.peer.host) {
            Ok(tls) => session.options.tls = Some(tls),
            Err(e) => {
                report.fail(
                    Check::Association,
                    format!("the TLS settings cannot be used: {e}"),
                    format!("fix {key}.tls (PEM files readable by priorfetch; cert and key of one pair)"),
                );
                return None;
            }
        }
    }
    let (called, calling) = (&target.peer.ae_title, &ctx.calling_ae);
    let started = Instant::now();
    let mut connected = session.connect().await.map(|_| ());
    // A transient rejection may be a passing peak: one retry tells "busy now" from
    // "always refused".
    let mut first_rejection = None;
    if let Err(DimseError::Rejected { permanent: false, reason, .. }) = &connected {
        first_rejection = Some(reason.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        connected = session.connect().await.map(|_| ());
    }
    let error = match connected {
        Ok(()) => {
            match first_rejection {
                Some(reason) => report.warn(
                    Check::Association,
                    format!("accepted on the second attempt; the first was rejected transiently ({reason}): the peer is at or near its association limit"),
                    format!("lower {key}.max_associations, or raise the peer's limit (the sum over all its clients must fit)"),
                ),
                None => report.ok(
                    Check::Association,
                    format!("accepted (called AE '{called}', calling AE '{calling}') in {} ms", started.elapsed().as_millis()),
                ),
            }
            return Some(session);
        }
        Err(e) => e,
    };
    match &error {
        DimseError::Rejected { reason, permanent, .. } => {
            let kind = if *permanent { "permanently" } else { "transiently" };
            let message = format!("association rejected {kind}: {reason}");
            let fix = if reason.contains("called AE") {
                format!("set {key}.ae_title to the peer's own AE title (it does not answer to '{called}'; Orthanc: its DicomAet)")
            } else if reason.contains("calling AE") {
                calling_ae_fix(target, ctx)
            } else if reason.contains("congestion") || reason.contains("limit exceeded") || !permanent {
                format!(
                    "the peer is at its association limit: retry later, lower {key}.max_associations, \
                     or raise the peer's limit (the sum over all its clients must fit)"
                )
            } else if reason.contains("application context") || reason.contains("protocol version") {
                "the peer does not speak this DICOM upper layer: check it is a DICOM service".into()
            } else {
                // Many PACS reject permanently without a reason when the calling AE or its
                // host address is not in their AE table.
                format!("{}; also check that {key}.ae_title is the peer's AE", calling_ae_fix(target, ctx))
            };
            report.fail(Check::Association, message, fix);
        }
        DimseError::Timeout { after, .. } => report.fail(
            Check::Association,
            format!("TCP connects but no answer to A-ASSOCIATE-RQ within {} s", after.as_secs()),
            format!(
                "{key}.port must be the peer's DICOM port: this port accepts TCP but does not speak DICOM \
                 (an HTTP or TLS port, or a proxy holding the connection)"
            ),
        ),
        DimseError::Aborted { .. } => report.fail(
            Check::Association,
            "the peer aborted the association request".to_string(),
            format!("{}; check {key}.ae_title too", calling_ae_fix(target, ctx)),
        ),
        DimseError::NoContext { .. } => report.fail(
            Check::Association,
            "the peer accepted none of the proposed services (verification, query/retrieve)".to_string(),
            format!("enable query/retrieve for calling AE '{calling}' on the peer"),
        ),
        DimseError::Tls { problem, .. } => report.fail(
            Check::Association,
            format!("TLS handshake failed: {problem}"),
            problem.hint(&format!("{key}.tls")),
        ),
        other => report.fail(
            Check::Association,
            format!("association failed: {other}"),
            format!(
                "{key}.port answers but not with DICOM (a TLS port? an HTTP port?): use the peer's plain DICOM port; {}",
                other.hint()
            ),
        ),
    }
    None
}

/// Check 3: what was accepted against what the configuration needs.
pub(crate) fn contexts(target: &Target, session: &Session, report: &mut Report) {
    let key = &target.key;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (name, uid) in proposed(&target.role) {
        if session.accepted(uid) { accepted.push(name) } else { refused.push(name) }
    }
    let summary = format!(
        "accepted: {}{}",
        if accepted.is_empty() { "none".to_string() } else { accepted.join(", ") },
        if refused.is_empty() { String::new() } else { format!("; not accepted: {}", refused.join(", ")) }
    );
    let mut problems: Vec<(String, String)> = Vec::new();
    match &target.role {
        Role::Archive { retrieve, .. } => {
            let (find, mv, get) =
                (session.accepted(STUDY_FIND), session.accepted(STUDY_MOVE), session.accepted(STUDY_GET));
            if !find && session.accepted(PATIENT_FIND) {
                problems.push((
                    "level mismatch: the archive offers Patient Root C-FIND only; priorfetch queries Study Root".into(),
                    "enable the Study Root Query/Retrieve information model (FIND) for our AE on the archive".into(),
                ));
            } else if !find {
                problems.push((
                    "the archive offers no C-FIND".into(),
                    "enable Study Root C-FIND for our calling AE on the archive".into(),
                ));
            }
            match retrieve {
                RetrieveMethod::Move if !mv => problems.push((
                    "retrieve = \"move\" but the archive did not accept Study Root C-MOVE".into(),
                    if get {
                        format!(
                            "set {key}.retrieve = \"get\" (the archive accepts C-GET), or enable C-MOVE on the archive"
                        )
                    } else {
                        "enable Study Root C-MOVE for our calling AE on the archive".into()
                    },
                )),
                RetrieveMethod::Get if !get => problems.push((
                    "retrieve = \"get\" but the archive did not accept Study Root C-GET".into(),
                    if mv {
                        format!("set {key}.retrieve = \"move\" and {key}.move_destination (the archive accepts C-MOVE)")
                    } else {
                        "enable Study Root C-GET for our calling AE on the archive".into()
                    },
                )),
                _ => {}
            }
        }
        Role::Destination { check_existing } => {
            if *check_existing && !session.accepted(STUDY_FIND) {
                problems.push((
                    "check_existing = true but the destination does not accept Study Root C-FIND".into(),
                    "set destination.check_existing = false, or enable C-FIND for our AE on the destination".into(),
                ));
            }
        }
    }
    if problems.is_empty() {
        report.ok(Check::Contexts, summary);
    } else {
        for (message, fix) in problems {
            report.fail(Check::Contexts, format!("{message} ({summary})"), fix);
        }
    }
}

/// Check 4. False when the peer aborted: our AE is not welcome, nothing later can work.
pub(crate) async fn echo(target: &Target, ctx: &DoctorContext, session: &mut Session, report: &mut Report) -> bool {
    if !session.accepted(VERIFICATION) {
        report.warn(
            Check::Echo,
            "the peer does not offer Verification (C-ECHO)",
            "none needed for prefetch; monitoring by C-ECHO will not work",
        );
        return true;
    }
    match session.echo().await {
        Ok(elapsed) => {
            report.ok(Check::Echo, format!("c-echo ok in {} ms", elapsed.as_millis()));
            true
        }
        Err(DimseError::Aborted { .. }) => {
            report.fail(
                Check::Echo,
                "the peer aborted the association on C-ECHO: it does not accept our calling AE",
                calling_ae_fix(target, ctx),
            );
            false
        }
        Err(e) => {
            report.fail(Check::Echo, format!("c-echo failed: {e}"), e.hint());
            true
        }
    }
}
