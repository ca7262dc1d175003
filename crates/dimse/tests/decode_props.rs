//! No panic on malformed input: arbitrary bytes into the command-set decoder.

use priorfetch_dimse::command::Command;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    #[test]
    fn command_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Command::decode(&bytes);
    }

    #[test]
    fn mutated_commands_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut c = Command::new(priorfetch_dimse::command::field::C_FIND_RSP);
        c.put_u16(priorfetch_dimse::command::tags::STATUS, 0xFF00).put_uid(priorfetch_dimse::command::tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.2.2.1");
        let mut bytes = c.encode().unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let end = cut.index(bytes.len() + 1);
        let _ = Command::decode(&bytes[..end]);
    }
}

/// Identifiers from an archive go through the general parser; whatever the bytes, the
/// bounded decoder answers (value or error) within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_identifiers_fail_within_the_deadline() {
    use rand::RngExt;
    let mut rng = rand::rng();
    for _ in 0..300 {
        let len = rng.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        let started = std::time::Instant::now();
        let _ = priorfetch_dimse::scu::decode_identifier(bytes, "1.2.840.10008.1.2.1").await;
        assert!(started.elapsed() < std::time::Duration::from_secs(6));
    }
}
