//! `WGPU_ADAPTER_NAME` is honoured; one matching nothing is `Error::NoAdapter`, not wgpu's panic.
//! Its own test binary, because it sets a process-wide environment variable.

mod common;

use wgpu_batch::Error;

#[test]
fn env_adapter_name_matching_nothing_is_no_adapter() {
    // SAFETY: this binary has one test, so no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("WGPU_ADAPTER_NAME", "definitely-not-an-adapter") };
    let err = common::builder().build().unwrap_err();
    assert!(
        matches!(&err, Error::NoAdapter(m) if m.contains("definitely-not-an-adapter")),
        "{err}"
    );
    // A filter that matches a real adapter (case-insensitively) opens only matching devices.
    let name = unsafe_env_free_first_adapter_name();
    let needle = name.split_whitespace().next().unwrap().to_uppercase();
    unsafe { std::env::set_var("WGPU_ADAPTER_NAME", &needle) };
    let engine = common::build(common::builder());
    assert!(
        engine
            .devices()
            .iter()
            .all(|d| d.adapter.to_uppercase().contains(&needle))
    );
}

/// The first adapter's name, found with the filter variable removed.
fn unsafe_env_free_first_adapter_name() -> String {
    // SAFETY: as above, no other thread reads the environment.
    unsafe { std::env::remove_var("WGPU_ADAPTER_NAME") };
    common::engine().devices()[0].adapter.clone()
}
