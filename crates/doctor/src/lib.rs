//! `priorfetch doctor`: diagnoses each archive (and the destination) and says what to fix,
//! one finding per line, each also logged as one structured line (warn! for failures).
//!
//! Checks, in order; a failure skips the later checks it makes meaningless:
//! 1. reach: DNS, TCP connect (refused / timeout / unreachable, each with its fix);
//! 2. association: accepted, or the A-ASSOCIATE-RJ decoded (called/calling AE, busy), an
//!    abort, or a port that accepts TCP but never answers;
//! 3. contexts: Verification, Study/Patient Root FIND/MOVE/GET against `retrieve`;
//! 4. echo: C-ECHO (an abort here means our calling AE is not welcome);
//! 5. query: may our AE query (Orthanc aborts on the first C-FIND for an unknown AE), and
//!    at STUDY and SERIES level ("level mismatch");
//! 6. match-cap: a broad C-FIND counted (0xFE00 without our C-CANCEL, 0xA7xx, round
//!    numbers) against `max_matches`;
//! 7. move-destination (`retrieve = "move"`): see `probes::move_destination` for what Orthanc
//!    and dcmqrscp do; or get (`retrieve = "get"`): one instance by C-GET, discarded;
//! 8. matching: exact, wildcard and case behaviour of PatientID / PatientName.
//!
//! DICOMweb archives get their own checks (`web.rs`): reach, QIDO-RS (auth, root URL, the
//! planner's keys), paging and match cap, one instance by WADO-RS.
//!
//! Layout: `finding.rs` (what is reported), `target.rs` (what is diagnosed, settings),
//! `reach.rs` (check 1), `session.rs` (checks 2-4 and the association the probes use),
//! `probes.rs` (checks 5-8). No metrics: the doctor is a one-shot tool, its output is the
//! report.

mod finding;
mod probes;
pub mod reach;
mod session;
mod target;
mod web;

pub use finding::{Check, Finding, Severity, any_failed};
pub use target::{DoctorContext, DoctorError, Role, Target};

use finding::Report;
use priorfetch_config::{ArchiveConfig, DestinationConfig, Protocol, RetrieveMethod};

/// Diagnoses `archives[index]`.
pub async fn diagnose(archive: &ArchiveConfig, index: usize, ctx: &DoctorContext) -> Vec<Finding> {
    if archive.protocol == Protocol::Dicomweb {
        return web::diagnose(archive, index, ctx).await;
    }
    match Target::archive(index, archive) {
        Ok(target) => diagnose_target(&target, ctx).await,
        Err(e) => {
            let mut report = Report::new(&archive.name);
            report.fail(
                Check::Reach,
                format!("cannot diagnose: {e}"),
                "fix the configuration (priorfetch config check)",
            );
            report.findings
        }
    }
}

/// Diagnoses the `[destination]`: reach, association, contexts, C-ECHO, and with
/// `check_existing` whether it lets us C-FIND.
pub async fn diagnose_destination(dest: &DestinationConfig, ctx: &DoctorContext) -> Vec<Finding> {
    match Target::destination(dest) {
        Ok(target) => diagnose_target(&target, ctx).await,
        Err(e) => {
            let mut report = Report::new("destination");
            report.fail(
                Check::Reach,
                format!("cannot diagnose: {e}"),
                "fix the configuration (priorfetch config check)",
            );
            report.findings
        }
    }
}

/// Runs every check that applies to `target`, in order.
pub async fn diagnose_target(target: &Target, ctx: &DoctorContext) -> Vec<Finding> {
    let mut report = Report::new(&target.name);
    let applies = applicable(target);
    if let Target { role: target::Role::Archive { protocol: Protocol::Dicomweb, .. }, .. } = target {
        report.skip(Check::Reach, "protocol = \"dicomweb\" archives are not diagnosed yet");
        return report.findings;
    }
    if !reach::check(target, ctx.connect_timeout, &mut report).await {
        report.skip_after(Check::Reach, &applies, "no TCP connection");
        return report.findings;
    }
    // Peers that count TCP connections against their association cap (DCMTK forks one
    // process per connection) must first see the reach probe's connection close.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let Some(mut session) = session::associate(target, ctx, &mut report).await else {
        report.skip_after(Check::Association, &applies, "no association");
        return report.findings;
    };
    session::contexts(target, &session, &mut report);
    if !session::echo(target, ctx, &mut session, &mut report).await {
        report.skip_after(Check::Echo, &applies, "the peer does not accept our calling AE");
        session.close().await;
        return report.findings;
    }
    if applies.contains(&Check::Query) && !probes::query(target, ctx, &mut session, &mut report).await {
        report.skip_after(Check::Query, &applies, "the peer does not let us query");
        session.close().await;
        return report.findings;
    }
    if let target::Role::Archive { retrieve, move_destination, max_matches, .. } = &target.role {
        let sample = probes::match_cap(target, ctx, *max_matches, &mut session, &mut report).await;
        match (retrieve, move_destination) {
            (RetrieveMethod::Move, Some(dest)) => {
                probes::move_destination(target, ctx, dest, sample.as_ref(), &mut session, &mut report).await
            }
            (RetrieveMethod::Move, None) => report.fail(
                Check::MoveDestination,
                "retrieve = \"move\" without a move destination",
                format!("set {}.move_destination to the AE the archive knows for the destination", target.key),
            ),
            (RetrieveMethod::Get, _) => probes::get(target, sample.as_ref(), &mut session, &mut report).await,
            (RetrieveMethod::Wado, _) => {}
        }
        probes::matching(sample.as_ref(), &mut session, &mut report).await;
    }
    session.close().await;
    report.findings
}

fn applicable(target: &Target) -> Vec<Check> {
    match &target.role {
        // Only the retrieve check of the configured method applies.
        target::Role::Archive { retrieve, .. } => Check::ALL
            .into_iter()
            .filter(|c| match c {
                Check::MoveDestination => *retrieve == RetrieveMethod::Move,
                Check::Get => *retrieve == RetrieveMethod::Get,
                _ => true,
            })
            .collect(),
        target::Role::Destination { check_existing: true } => {
            vec![Check::Reach, Check::Association, Check::Contexts, Check::Echo, Check::Query]
        }
        target::Role::Destination { check_existing: false } => {
            vec![Check::Reach, Check::Association, Check::Contexts, Check::Echo]
        }
    }
}
