//! The console in a real headless browser (Debian's chromium through chromedriver): an
//! operator logs in, opens the schedule and an exam, bulk-retries the failed jobs of one
//! archive and sees the result; a viewer sees no PHI and no action, and a crafted POST
//! with the viewer's own session is refused; without a session there is only the login
//! form. Each page visited is saved as `target/screenshots/console-<page>.png`.

mod common;

use common::browser::Browser;
use common::{App, HINT, MRN, OPERATOR, TRACE, VIEWER};
use std::time::Duration;

/// A whole browser test is bounded, so a hung browser fails rather than stalls CI.
const TEST: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_bulk_retries_the_failed_jobs_of_one_archive() {
    tokio::time::timeout(TEST, operator_flow()).await.expect("the browser test finished in time");
}

async fn operator_flow() {
    let app = App::start().await;
    let seeded = app.seed().await;
    let browser = Browser::start().await;

    browser.goto(&format!("{}/ui/schedule", app.base)).await;
    browser.wait_for("form#login").await;
    browser.screenshot("login").await;
    browser.fill("#token", OPERATOR).await;
    browser.click("#login-submit").await;
    browser.wait_for("table#exams").await;
    assert!(browser.url().await.ends_with("/ui/schedule"), "back to the page first asked for");
    assert_eq!(browser.text("#caller").await, "oscar (operator)");
    let schedule = browser.text("table#exams").await;
    assert!(schedule.contains("ACC-1") && schedule.contains("ACC-2") && schedule.contains(MRN), "{schedule}");
    browser.screenshot("schedule").await;

    browser.click_link("ACC-1").await;
    browser.wait_for("#exam-facts").await;
    assert_eq!(browser.text("#rule").await, "ct-chest");
    assert_eq!(browser.text("#trace-id").await, TRACE);
    let queries = browser.text("table#queries").await;
    assert!(queries.contains("StudyDate=20210101-") && queries.contains("lta"), "{queries}");
    let priors = browser.text("table#priors").await;
    assert!(priors.contains("chosen") && priors.contains("older than the rule's lookback (5y)"), "{priors}");
    let jobs = browser.text("table#jobs").await;
    assert!(jobs.contains(HINT) && jobs.contains("0xA702"), "{jobs}");
    browser.screenshot("exam").await;

    // filter the failed jobs of lta, then retry them all
    browser.goto(&format!("{}/ui/jobs?state=failed&archive=lta", app.base)).await;
    browser.wait_for("form#bulk-retry").await;
    assert_eq!(browser.count("table#jobs tr[data-state=failed]").await, seeded.lta_failed.len());
    assert_eq!(browser.count("table#jobs tbody tr").await, seeded.lta_failed.len(), "only lta's failed jobs");
    browser.click("#bulk-retry-submit").await;
    browser.accept_dialog().await;
    browser.wait_for("#notice").await;
    let notice = browser.text("#notice").await;
    assert_eq!(notice, "Re-queued 3 job(s) matching state=failed, archive=lta.");
    assert!(browser.url().await.ends_with("/ui/jobs?archive=lta"));
    assert_eq!(browser.count("table#jobs tr[data-archive=lta][data-state=available]").await, 3);
    assert!(browser.text("table#audit").await.contains("jobs.bulk_retry"));
    browser.screenshot("jobs").await;

    // in the database: exactly that archive's failed jobs were re-queued, and audited
    for id in &seeded.lta_failed {
        assert_eq!(app.state(*id).await, "available", "job {id}");
    }
    for id in &seeded.sta_failed {
        assert_eq!(app.state(*id).await, "failed", "job {id} of sta untouched");
    }
    let audit = app.store.audit_log(5).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0].actor.as_str(), audit[0].action.as_str()), ("oscar", "jobs.bulk_retry"));
    assert_eq!((audit[0].target["archive"].as_str(), audit[0].outcome.as_str()), (Some("lta"), "requeued 3"));

    browser.click_link("Dead letters").await;
    browser.wait_for("table#dead-letters").await;
    assert!(browser.text("table#dead-letters").await.contains("scheduled_at missing"));
    browser.screenshot("dead-letters").await;
    browser.click_link("Archives").await;
    browser.wait_for("table#archives").await;
    let archives = browser.text("table#archives").await;
    assert!(archives.contains("LTA@127.0.0.1:11104") && archives.contains("STA@127.0.0.1:11105"), "{archives}");
    browser.screenshot("archives").await;

    browser.click("#logout").await;
    browser.wait_for("form#login").await;
    browser.goto(&format!("{}/ui/jobs", app.base)).await;
    browser.wait_for("form#login").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_phi_and_cannot_retry() {
    tokio::time::timeout(TEST, viewer_flow()).await.expect("the browser test finished in time");
}

async fn viewer_flow() {
    let app = App::start().await;
    let seeded = app.seed().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/login", app.base)).await;
    browser.fill("#token", VIEWER).await;
    browser.click("#login-submit").await;
    browser.wait_for("table#exams").await;
    assert_eq!(browser.text("#caller").await, "wanda (viewer)");
    browser.screenshot("viewer").await;
    let mut csrf = String::new();
    for path in ["/ui/schedule".to_string(), format!("/ui/exams/{}", seeded.exam), "/ui/jobs?state=failed".into()] {
        browser.goto(&format!("{}{path}", app.base)).await;
        browser.wait_for("main").await;
        let html = browser.html().await;
        assert!(!html.contains(MRN) && !html.contains("DOE"), "{path}: no patient ID or name in the page");
        for action in ["button.retry", "#bulk-retry", "button.cancel", "button.reschedule"] {
            assert!(!browser.has(action).await, "{path}: no {action} for a viewer");
        }
        csrf = common::csrf_of(&html);
    }
    browser.screenshot("viewer-jobs").await;

    // a crafted POST with the viewer's own session cookie and CSRF token
    let cookie = browser.client.get_named_cookie("priorfetch_session").await.expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    let response = reqwest::Client::new()
        .post(format!("{}/ui/jobs/retry", app.base))
        .header("cookie", format!("priorfetch_session={}", cookie.value()))
        .form(&[("csrf", csrf.as_str()), ("state", "failed"), ("archive", "lta")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    for id in seeded.lta_failed.iter().chain(&seeded.sta_failed) {
        assert_eq!(app.state(*id).await, "failed");
    }
    assert!(app.store.audit_log(5).await.unwrap().is_empty());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_the_console_is_a_login_page() {
    tokio::time::timeout(TEST, login_flow()).await.expect("the browser test finished in time");
}

async fn login_flow() {
    let app = App::start().await;
    app.seed().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/exams/ACC-1", app.base)).await;
    browser.wait_for("form#login").await;
    assert!(!browser.has("#exam-facts").await);
    let html = browser.html().await;
    assert!(!html.contains(MRN) && !html.contains("ct-chest"), "nothing of the exam shows");
    let typed = "wrong-token-typed-by-someone";
    browser.fill("#token", typed).await;
    browser.click("#login-submit").await;
    browser.wait_for("#login-error").await;
    assert_eq!(browser.text("#login-error").await, "Unknown token.");
    assert!(!browser.html().await.contains(typed), "the token is never echoed");
    browser.screenshot("login-error").await;
    // the form still leads to the exam asked for
    browser.fill("#token", OPERATOR).await;
    browser.click("#login-submit").await;
    browser.wait_for("#exam-facts").await;
    assert!(browser.url().await.ends_with("/ui/exams/ACC-1"));
    browser.close().await;
}
