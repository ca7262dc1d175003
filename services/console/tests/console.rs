//! The console over real HTTP on 127.0.0.1 against a fresh Postgres database, without a
//! browser: login and its refusals, the session cookie, CSRF, roles and PHI, every
//! action and its audit row, logout, the `admin.api` switch.

mod common;

use common::{App, HINT, Http, MRN, NAME, OPERATOR, Options, SENDER, TRACE, VIEWER, csrf_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_every_page_is_the_login_form() {
    let app = App::start().await;
    let seeded = app.seed().await;
    let http = Http::new(&app);
    for path in ["/ui/schedule", "/ui/jobs?state=failed", &format!("/ui/exams/{}", seeded.exam), "/ui/archives"] {
        let (status, html) = http.get(path).await;
        assert_eq!(status, 401, "{path}");
        assert!(html.contains("id=\"login\"") && html.contains("name=\"token\""), "{path}: {html}");
        assert!(!html.contains(MRN) && !html.contains("ACC-1"), "{path} leaks nothing");
    }
    let (status, html) = http.get("/ui/jobs?state=failed").await;
    assert_eq!(status, 401);
    assert!(html.contains("value=\"/ui/jobs?state=failed\""), "login returns to the page asked for");
    // an action without a session does nothing
    let (status, _, _) = http.post("/ui/jobs/retry", &[("archive", "lta"), ("csrf", "x")]).await;
    assert_eq!(status, 401);
    assert_eq!(app.state(seeded.lta_failed[0]).await, "failed");
    // the API keeps answering 401 to calls without a bearer token
    assert_eq!(http.get("/api/exams").await.0, 401);
    // security headers on every console answer
    let response = http.client.get(format!("{}/ui/login", http.base)).send().await.unwrap();
    let headers = response.headers();
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_the_login_form_with_an_error_and_are_throttled() {
    let app = App::start().await;
    let mut http = Http::new(&app);
    let wrong = "not-the-token-but-a-secret-typo";
    let (status, set_cookie, html) = http.login(wrong).await;
    assert_eq!((status, set_cookie.as_str()), (401, ""));
    assert!(html.contains("id=\"login-error\"") && html.contains("Unknown token."), "{html}");
    assert!(!html.contains(wrong), "the token typed is never echoed");
    let (status, _, html) = http.login(SENDER).await;
    assert_eq!(status, 401);
    assert!(html.contains("may only send events"), "{html}");
    assert!(!html.contains(SENDER));
    // five failures from one address: the next attempt is refused, even a good one
    for _ in 0..3 {
        assert_eq!(http.login(wrong).await.0, 401);
    }
    let (status, set_cookie, html) = http.login(OPERATOR).await;
    assert_eq!((status, set_cookie.as_str()), (429, ""), "{html}");
    assert!(html.contains("Too many failed logins"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_session_reads_with_phi_and_every_action_is_audited() {
    let app = App::start().await;
    let seeded = app.seed().await;
    let mut http = Http::new(&app);
    let (status, set_cookie, _) = http.login(OPERATOR).await;
    assert_eq!(status, 303);
    for part in ["priorfetch_session=", "HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "no TLS on this admin listener");
    assert!(!set_cookie.contains(OPERATOR), "the cookie is a session ID, not the token");

    let (status, schedule) = http.get("/ui/schedule").await;
    assert_eq!(status, 200, "{schedule}");
    assert!(schedule.contains("oscar (operator)"));
    assert!(schedule.contains("ACC-1") && schedule.contains("ACC-2") && schedule.contains(MRN));
    assert!(schedule.contains("0 / 4"), "priors arrived / expected of ACC-1: {schedule}");
    let (_, found) = http.get(&format!("/ui/schedule?q={MRN}")).await;
    assert!(found.contains("ACC-1") && found.contains("ACC-2"), "operators search by patient ID");
    let (_, found) = http.get("/ui/schedule?q=ACC-2").await;
    assert!(found.contains("ACC-2") && !found.contains("ACC-1"));

    let (status, exam) = http.get("/ui/exams/ACC-1").await;
    assert_eq!(status, 200);
    for shown in ["ct-chest", "StudyDate=20210101-", "older than the rule's lookback", TRACE, HINT, MRN] {
        assert!(exam.contains(shown), "exam page shows {shown}");
    }
    assert_eq!(http.get("/ui/exams/NO-SUCH").await.0, 404);

    // CSRF: a form without this session's token does nothing
    let (_, jobs) = http.get("/ui/jobs?state=failed&archive=lta").await;
    let csrf = csrf_of(&jobs);
    assert_eq!(http.post("/ui/jobs/retry", &[("archive", "lta")]).await.0, 403);
    assert_eq!(http.post("/ui/jobs/retry", &[("archive", "lta"), ("csrf", "forged")]).await.0, 403);
    assert_eq!(app.state(seeded.lta_failed[0]).await, "failed");

    // bulk retry of one archive's failed jobs
    let form = [("csrf", csrf.as_str()), ("state", "failed"), ("archive", "lta"), ("exam", ""), ("since", "")];
    let (status, location, _) = http.post("/ui/jobs/retry", &form).await;
    assert_eq!((status, location.as_str()), (303, "/ui/jobs?archive=lta"));
    let (_, after) = http.get(&location).await;
    assert!(after.contains("Re-queued 3 job(s) matching state=failed, archive=lta."), "{after}");
    for id in &seeded.lta_failed {
        assert_eq!(app.state(*id).await, "available", "job {id}");
    }
    for id in &seeded.sta_failed {
        assert_eq!(app.state(*id).await, "failed", "job {id} of the other archive");
    }
    let audit = app.store.audit_log(1).await.unwrap();
    assert_eq!((audit[0].actor.as_str(), audit[0].action.as_str()), ("oscar", "jobs.bulk_retry"));
    assert_eq!(audit[0].outcome, "requeued 3");

    // one job: reschedule, retry, cancel
    let sta = seeded.sta_failed[0];
    let back = format!("/ui/exams/{}", seeded.exam);
    let form = [("csrf", csrf.as_str()), ("back", back.as_str()), ("at", "in 3h")];
    let (status, location, _) = http.post(&format!("/ui/jobs/{sta}/reschedule"), &form).await;
    assert_eq!((status, location.as_str()), (303, back.as_str()));
    let job = app.store.job(sta).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempt, job.finished_at), ("scheduled", 0, None));
    let ahead = job.not_before - chrono::Utc::now();
    assert!(ahead > chrono::Duration::minutes(170) && ahead <= chrono::Duration::hours(3), "{ahead}");
    let (_, page) = http.get(&back).await;
    assert!(page.contains(&format!("Job {sta} rescheduled for")), "the notice shows on the page gone back to");
    let form = [("csrf", csrf.as_str()), ("back", "//evil.example/")];
    let (status, location, _) = http.post(&format!("/ui/jobs/{sta}/cancel"), &form).await;
    assert_eq!((status, location.as_str()), (303, "/ui/schedule"), "never sent off-site");
    assert_eq!(app.state(sta).await, "cancelled");
    let other = seeded.sta_failed[1];
    assert_eq!(http.post(&format!("/ui/jobs/{other}/retry"), &[("csrf", csrf.as_str())]).await.0, 303);
    assert_eq!(app.state(other).await, "available");
    let actions: Vec<String> = app.store.audit_log(3).await.unwrap().iter().map(|a| a.action.clone()).collect();
    assert_eq!(actions, ["jobs.retry", "jobs.cancel", "jobs.reschedule"]);
    let (_, jobs) = http.get("/ui/jobs").await;
    assert!(jobs.contains("id=\"audit\"") && jobs.contains("jobs.reschedule"), "recent actions listed");

    // dead letters: the operator sees the payload and replays it (still invalid)
    let (_, letters) = http.get("/ui/dead-letters").await;
    assert!(letters.contains("scheduled_at missing") && letters.contains(MRN));
    let path = format!("/ui/dead-letters/{}/replay", seeded.dead_letter);
    assert_eq!(http.post(&path, &[("csrf", csrf.as_str())]).await.0, 303);
    let (_, letters) = http.get("/ui/dead-letters").await;
    assert!(letters.contains(&format!("Dead letter {} replayed: invalid", seeded.dead_letter)), "{letters}");
    assert_eq!(app.store.audit_log(1).await.unwrap()[0].action, "dead_letters.replay");

    // archives: both configured, their slots and queues
    let (_, archives) = http.get("/ui/archives").await;
    assert!(archives.contains("LTA@127.0.0.1:11104") && archives.contains("0 / 2"), "{archives}");

    // logout ends the session here, not only in the browser
    let (status, _, html) = http.post("/ui/logout", &[("csrf", csrf.as_str())]).await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"login\""));
    assert_eq!(http.get("/ui/schedule").await.0, 401);
    assert!(!NAME.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_phi_and_may_not_act() {
    let app = App::start().await;
    let seeded = app.seed().await;
    let mut http = Http::new(&app);
    assert_eq!(http.login(VIEWER).await.0, 303);
    let exam = format!("/ui/exams/{}", seeded.exam);
    for path in
        ["/ui/schedule", exam.as_str(), "/ui/exams/ACC-2", "/ui/jobs?state=failed", "/ui/dead-letters", "/ui/archives"]
    {
        let (status, html) = http.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!html.contains(MRN) && !html.contains("DOE"), "{path} shows no patient identifier or name");
        for action in ["class=\"retry", "id=\"bulk-retry\"", "class=\"cancel", "class=\"replay", "class=\"reschedule"] {
            assert!(!html.contains(action), "{path} offers a viewer no action ({action})");
        }
    }
    let (_, schedule) = http.get("/ui/schedule").await;
    assert!(schedule.contains("wanda (viewer)") && schedule.contains("HOSP #"), "issuer and hash instead");
    let (_, page) = http.get(&exam).await;
    assert!(page.contains("[redacted]") && page.contains("ct-chest") && page.contains(TRACE));
    // searching by patient ID is an operator's: a viewer's search matches accessions only
    let (_, found) = http.get(&format!("/ui/schedule?q={MRN}")).await;
    assert!(!found.contains("ACC-1") && found.contains("accession number only"));

    // a crafted POST with the viewer's own session and CSRF token is refused
    let csrf = csrf_of(&schedule);
    let (status, _, body) = http.post("/ui/jobs/retry", &[("csrf", csrf.as_str()), ("archive", "lta")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("may only read"));
    let one = seeded.lta_failed[0];
    for action in ["retry", "cancel", "reschedule"] {
        let form = [("csrf", csrf.as_str()), ("at", "in 1h")];
        assert_eq!(http.post(&format!("/ui/jobs/{one}/{action}"), &form).await.0, 403, "{action}");
    }
    let replay = format!("/ui/dead-letters/{}/replay", seeded.dead_letter);
    assert_eq!(http.post(&replay, &[("csrf", csrf.as_str())]).await.0, 403);
    for id in seeded.lta_failed.iter().chain(&seeded.sta_failed) {
        assert_eq!(app.state(*id).await, "failed");
    }
    assert!(app.store.audit_log(10).await.unwrap().is_empty(), "nothing was done");
    // a viewer may log out
    assert_eq!(http.post("/ui/logout", &[("csrf", csrf.as_str())]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_loopback_callers_log_in_as_the_local_operator() {
    let app = App::start_with(Options { tokens: false, ..Default::default() }).await;
    let seeded = app.seed().await;
    let mut http = Http::new(&app);
    let (_, form) = http.get("/ui/login").await;
    assert!(form.contains("Continue as loopback"));
    assert_eq!(http.login("").await.0, 303);
    let (status, schedule) = http.get("/ui/schedule").await;
    assert_eq!(status, 200);
    assert!(schedule.contains("loopback (operator)") && schedule.contains(MRN));
    let csrf = csrf_of(&schedule);
    let form = [("csrf", csrf.as_str()), ("archive", "sta")];
    assert_eq!(http.post("/ui/jobs/retry", &form).await.0, 303);
    assert_eq!(app.state(seeded.sta_failed[0]).await, "available");
    assert_eq!(app.store.audit_log(1).await.unwrap()[0].actor, "loopback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_the_api_switch() {
    let app = App::start_with(Options { api: false, ..Default::default() }).await;
    let http = Http::new(&app);
    assert_eq!(http.get("/ui/login").await.0, 404);
    assert_eq!(http.get("/ui/schedule").await.0, 404);
}
