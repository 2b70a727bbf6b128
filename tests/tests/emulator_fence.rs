//! Fencing's provider calls (tandem-resource-agent's `Fencer`) against the emulator, for
//! DigitalOcean, Hetzner and Vultr: power-off by id and by name, already off, the token
//! refused, a server that does not exist, an errored action, 5xx and hangs past the call's
//! timeout. The token never appears in an error.
use std::time::Duration;

use tandem_config::{Provider, Secret};
use tandem_resource_agent::provider::{Fencer, ProviderError, stats};
use tandem_tests::emulator::Emulator;
use tandem_tests::emulator::testkit::{PRIMARY, READ_ONLY_TOKEN, SECONDARY, TOKEN, fixture};

async fn start() -> Emulator {
    Emulator::start(fixture(Duration::from_millis(50)))
        .await
        .expect("emulator starts")
}

fn base(emu: &Emulator, p: Provider) -> String {
    match p {
        Provider::DigitalOcean => emu.addresses.api.clone(),
        Provider::Hetzner => emu.addresses.hetzner.clone(),
        Provider::Vultr => emu.addresses.vultr.clone(),
    }
}

fn fencer(emu: &Emulator, p: Provider, token: &str, timeout: Duration) -> Fencer {
    let token = Secret::new(token.as_bytes().to_vec());
    Fencer::new(p, &token, Some(base(emu, p)), timeout, None).expect("fencer builds")
}

fn off(emu: &Emulator, id: u64) -> bool {
    emu.world.lock().droplets[&id].off
}

fn vultr_id(emu: &Emulator, id: u64) -> String {
    emu.world.lock().droplets[&id].vultr_id()
}

#[tokio::test]
async fn every_provider_powers_a_server_off_by_id_and_by_name_once() {
    for p in tandem_config::Provider::ALL {
        let emu = start().await;
        let f = fencer(&emu, p, TOKEN, Duration::from_secs(10));
        let id = match p {
            Provider::Vultr => vultr_id(&emu, SECONDARY),
            _ => SECONDARY.to_string(),
        };
        let o = f
            .power_off("secondary", Some(&id))
            .await
            .expect("power-off");
        assert!(off(&emu, SECONDARY), "{p}: the droplet is off");
        assert!(!off(&emu, PRIMARY));
        assert!(!o.already_off);
        assert_eq!(o.server, id);
        assert_eq!(o.action_id.is_some(), p != Provider::Vultr, "{p}: {o:?}");
        let again = f.power_off("secondary", None).await.expect("by name");
        assert!(
            again.already_off,
            "{p}: off already, nothing posted: {again:?}"
        );
        assert_eq!(again.server, id, "{p}: found by name");
        let actions = emu.world.lock().power.actions.len();
        assert_eq!(actions, 1, "{p}: one power action");

        let by_name = f.power_off("primary", None).await.expect("by name");
        assert!(off(&emu, PRIMARY) && !by_name.already_off, "{p}");
    }
}

#[tokio::test]
async fn refusals_end_the_call_and_never_show_the_token() {
    let emu = start().await;
    let bad = "dop_v1_not_a_token_known_to_the_emulator_42";
    let e = fencer(&emu, Provider::DigitalOcean, bad, Duration::from_secs(5))
        .power_off("secondary", Some("1002"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains(bad) && !format!("{e:?}").contains(bad));
    let e = fencer(
        &emu,
        Provider::DigitalOcean,
        READ_ONLY_TOKEN,
        Duration::from_secs(5),
    )
    .power_off("secondary", Some("1002"))
    .await
    .unwrap_err();
    assert!(e.to_string().contains("droplet:update"), "{e}");
    let f = fencer(&emu, Provider::DigitalOcean, TOKEN, Duration::from_secs(5));
    let e = f.power_off("secondary", Some("999")).await.unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e}");
    let e = f.power_off("nosuchnode", None).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("no droplet is named nosuchnode; set nodes[].provider_id"),
        "{e}"
    );
    let e = f.power_off("secondary", Some("web-1")).await.unwrap_err();
    assert!(e.to_string().contains("ids are numbers"), "{e}");
    assert!(!off(&emu, SECONDARY), "nothing was powered off");
}

#[tokio::test]
async fn an_errored_power_off_is_posted_again_and_faults_end_in_time() {
    let emu = start().await;
    emu.set_faults(serde_json::json!({"error_actions": 1}))
        .await;
    let f = fencer(&emu, Provider::DigitalOcean, TOKEN, Duration::from_secs(10));
    let o = f
        .power_off("secondary", Some("1002"))
        .await
        .expect("second action");
    assert!(off(&emu, SECONDARY));
    assert_eq!(emu.world.lock().power.actions.len(), 2, "{o:?}");

    let f = fencer(&emu, Provider::DigitalOcean, TOKEN, Duration::from_secs(1));
    emu.set_faults(serde_json::json!({"error_rate": 1.0, "error_status": 503}))
        .await;
    let started = tokio::time::Instant::now();
    let e = f.power_off("primary", Some("1001")).await.unwrap_err();
    assert!(e.to_string().contains("503"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    emu.set_faults(serde_json::json!({"hang_next": 1000})).await;
    let e = f.power_off("primary", Some("1001")).await.unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(!off(&emu, PRIMARY));
    emu.set_faults(serde_json::json!({})).await;
    f.power_off("primary", Some("1001"))
        .await
        .expect("after the faults");
    assert!(off(&emu, PRIMARY));
}

/// Issue 14: the fence path waits out 429s like the moves (Retry-After here), counted per
/// provider, and a 429 whose wait would pass the call's timeout ends the call in time, the
/// server left on.
#[tokio::test]
async fn a_rate_limited_power_off_waits_its_retry_after_or_ends_in_time() {
    let emu = start().await;
    let hetzner = || {
        stats::provider_counts()
            .into_iter()
            .find(|(p, _)| *p == Provider::Hetzner)
            .map(|(_, c)| c.rate_limited)
            .unwrap_or_default()
    };
    emu.set_faults(
        serde_json::json!({"rate_limit_burst": 2, "rate_limit_retry_after_secs": 1, "rate_limit_reset_secs": 600}),
    )
    .await;
    let before = hetzner();
    let f = fencer(&emu, Provider::Hetzner, TOKEN, Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    f.power_off("secondary", Some("1002"))
        .await
        .expect("power-off after the 429s");
    // Two Retry-After waits of a second, not the reset ten minutes away.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2200) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(off(&emu, SECONDARY));
    assert!(hetzner() >= before + 2);

    emu.set_faults(
        serde_json::json!({"rate_limit_burst": 1000, "rate_limit_retry_after_secs": 30}),
    )
    .await;
    let f = fencer(&emu, Provider::Hetzner, TOKEN, Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    let e = f.power_off("primary", Some("1001")).await.unwrap_err();
    assert!(e.to_string().contains("429"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!off(&emu, PRIMARY));
}
