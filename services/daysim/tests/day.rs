//! A shortened simulated day (300 exams, 12 simulated hours in about a minute) against
//! the simulated archives and real Postgres: readiness is judged from what the
//! destination actually received, and priorfetch's own record of every exam (in time,
//! late, failed) must agree with it.

use priorfetch_config::Dispatch;
use priorfetch_daysim::{DayOptions, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_day_is_ready_in_time_and_recorded_as_delivered() {
    priorfetch_testkit::db::init_test_log();
    let options = DayOptions {
        kind: Kind::Default,
        exams: 300,
        seed: 7,
        hours: 12.0,
        speed: 720.0,
        dispatch: vec![Dispatch::Deadline],
        server: priorfetch_testkit::db::postgres_server_url(),
    };
    let report = priorfetch_daysim::run(options).await.expect("the day runs");
    println!("{}", report.table());
    let r = &report.results[0];
    assert_eq!(r.exams + r.cancelled, 300);
    assert!(r.cancelled > 0, "the day cancels some orders");
    assert_eq!(r.in_time + r.late + r.failed, r.exams);
    assert!(r.instances > 0 && r.jobs > 0);
    // priorfetch's record agrees with what arrived, exam by exam
    assert_eq!(r.disagreements, 0, "recorded readiness disagrees with the destination");
    assert_eq!(r.recorded.0 + r.recorded.1 + r.recorded.2, r.exams);
    assert!(r.readiness() >= 0.9, "readiness {:.4}", r.readiness());
}
