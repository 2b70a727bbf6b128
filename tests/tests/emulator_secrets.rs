//! The provider token never appears in a log line (any level), an error or Debug output, and
//! token files are read the way DESIGN.md says (private, `$CREDENTIALS_DIRECTORY`).
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tandem_config::{ActionSettings, Provider, ReservedIpAgent, Secret};
use tandem_resource_agent::provider::{
    DigitalOcean, Options, PollSchedule, ProviderError, ReservedIpProvider, ServerId, from_config,
};
use tandem_tests::emulator::Emulator;
use tandem_tests::emulator::testkit::{PRIMARY, READ_ONLY_TOKEN, SECONDARY, TOKEN, fixture, ip};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn opts(emu: &Emulator, droplet: u64) -> Options {
    Options {
        api_url: Some(emu.addresses.api.clone()),
        metadata_url: Some(emu.addresses.metadata[&droplet].clone()),
        deadline: Duration::from_millis(1500),
        request_timeout: Duration::from_millis(300),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        poll: PollSchedule {
            first: Duration::from_millis(10),
            factor: 1.5,
            max: Duration::from_millis(50),
        },
        ..Options::default()
    }
}

#[test]
fn the_token_never_appears_in_logs_errors_or_debug_output() {
    let cap = Capture::default();
    let writer = cap.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seen = String::new();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let emu = Emulator::start(fixture(Duration::from_millis(20)))
                .await
                .unwrap();
            let mk = |tok: &str| {
                DigitalOcean::new(
                    ip(),
                    Secret::new(tok.as_bytes().to_vec()),
                    opts(&emu, SECONDARY),
                )
                .unwrap()
            };
            let good = mk(TOKEN);
            seen += &format!("{good:?}\n");
            seen += &format!("{:?}\n", good.assign().await);
            seen += &format!("{:?}\n", good.probe().await);
            // 403 and 401.
            for tok in [READ_ONLY_TOKEN, "dop_v1_bogus_token_value_123"] {
                let c = mk(tok);
                let released = c.release().await.map(|_| ());
                let assigned = c.assign().await.map(|_| ());
                seen += &format!("{c:?}\n");
                for e in [released, assigned].into_iter().filter_map(Result::err) {
                    seen += &format!("{e}\n{e:?}\n");
                }
            }
            // 5xx until the deadline, hangs, drops.
            for faults in [
                json!({"error_rate": 1.0}),
                json!({"hang_next": 10}),
                json!({"drop_next": 100}),
            ] {
                emu.set_faults(faults).await;
                let c = mk(TOKEN);
                if let Err(e) = c.release().await {
                    seen += &format!("{e}\n{e:?}\n");
                }
                emu.set_faults(json!({})).await;
            }
            emu.revoke(TOKEN).await;
            let e = good.holder().await.unwrap_err();
            seen += &format!("{e}\n{e:?}\n");
        });
    });
    let logs = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    assert!(logs.len() > 100, "tracing output was captured: {logs}");
    assert!(seen.contains("401") || seen.contains("rejected"), "{seen}");
    for secret in [TOKEN, READ_ONLY_TOKEN, "dop_v1_bogus_token_value_123"] {
        assert!(!logs.contains(secret), "token in the logs");
        assert!(
            !seen.contains(secret),
            "token in errors or Debug output:\n{seen}"
        );
    }
}

fn agent(token_file: std::path::PathBuf, api: &str, meta: Option<String>) -> ReservedIpAgent {
    ReservedIpAgent {
        provider: Provider::DigitalOcean,
        ip: ip(),
        token_file,
        api_url: Some(api.to_owned()),
        metadata_url: meta,
        droplet_id: None,
        droplet_ids: [("secondary".to_owned(), SECONDARY)].into_iter().collect(),
        unassign_on_stop: false,
        settings: ActionSettings {
            timeout: Duration::from_secs(10),
            monitor_interval: Duration::from_secs(10),
        },
    }
}

#[tokio::test]
async fn from_config_reads_a_private_token_file_and_the_node_droplet_id() {
    let emu = Emulator::start(fixture(Duration::from_millis(10)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("do-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let e = from_config(&agent(path.clone(), &emu.addresses.api, None), "secondary").unwrap_err();
    assert!(matches!(e, ProviderError::Token(_)), "{e}");
    assert!(e.to_string().contains("0644"), "{e}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = from_config(&agent(path.clone(), &emu.addresses.api, None), "secondary").unwrap();
    assert_eq!(p.server_id().await.unwrap(), ServerId::Numeric(SECONDARY));
    assert!(!format!("{p:?}").contains(TOKEN));
    p.assign().await.unwrap();
    assert_eq!(emu.holder(ip()), Some(SECONDARY));

    // A node without an entry in droplet_ids asks the metadata service.
    let meta = Some(emu.addresses.metadata[&PRIMARY].clone());
    let p = from_config(&agent(path, &emu.addresses.api, meta), "primary").unwrap();
    assert_eq!(p.server_id().await.unwrap(), ServerId::Numeric(PRIMARY));
}
