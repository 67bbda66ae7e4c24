//! One-to-one matching of detections against a reference, shared by the reference tests.

use ocelli::detect::Detection;

/// Same count, best first, and every expected detection matched by a distinct one that is
/// `close` to it.
pub fn assert_one_to_one(
    what: &str,
    got: &[Detection],
    expected: &[Detection],
    close: impl Fn(&Detection, &Detection) -> bool,
) {
    let context = || format!("{what}\n got:      {got:?}\n expected: {expected:?}");
    assert!(
        got.windows(2).all(|w| w[0].score >= w[1].score),
        "not best first: {}",
        context()
    );
    assert_eq!(got.len(), expected.len(), "detection count: {}", context());
    let mut free: Vec<&Detection> = got.iter().collect();
    for e in expected {
        let Some(i) = free.iter().position(|a| close(a, e)) else {
            panic!("no match for {e:?}: {}", context());
        };
        free.swap_remove(i);
    }
}
