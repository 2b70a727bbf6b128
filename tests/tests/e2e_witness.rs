//! Three voters (two members and a witness that runs membership only), real processes. Each
//! membership daemon runs in its own network namespace (the `netns` kit) so one node can be cut
//! off for real; the agents stay in the test's namespace and reach their membership daemon
//! over its Unix socket, and the emulator over loopback. Skipped, saying why, where namespaces
//! cannot be made (not root, no `ip`/`nft`).
use std::time::Duration;

use tandem_proto::agent::v1 as apb;
use tandem_resource_agent::core::Timers;
use tandem_tests::cluster::{Binaries, Spec, wait_for};

const MOVE_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_primary_loses_quorum_and_the_ip_moves_once_each_way() {
    tandem_tests::skip_unless!(tandem_tests::require::netns());
    let mut spec = Spec::fast(Binaries::for_tests().expect("binaries"));
    spec.witness = Some("witness".into());
    spec.network = Some(tandem_tests::netns::namespaces());
    let c = tandem_tests::start_settled(spec, None, Timers::default().settle, MOVE_LIMIT).await;

    let cut = c.partition(0).expect("partition");
    // Sample who runs the group until the secondary alone holds it.
    let max_running = std::cell::Cell::new(0);
    let (cr, mr) = (&c, &max_running);
    let moved = wait_for(MOVE_LIMIT, || async move {
        let c = cr;
        let on = c.running_on().await;
        mr.set(mr.get().max(on.len()));
        (on == ["secondary"] && c.holder().as_deref() == Some("secondary")).then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "the secondary never took over{}",
        c.diagnostics()
    );
    let failover = c.moved_after(cut, "secondary").expect("move recorded");
    // The cut-off primary has no quorum: it must not hold the group.
    let p = c.agent_status(0).await.expect("primary agent answers");
    assert!(!p.quorate, "the cut-off primary still thinks it is quorate");
    let pg = p
        .groups
        .iter()
        .find(|g| g.name == "floatip")
        .expect("group");
    assert_ne!(pg.state, apb::GroupState::Running as i32);

    let healed = c.heal().expect("heal");
    let back = wait_for(MOVE_LIMIT, || async move {
        let c = cr;
        let on = c.running_on().await;
        mr.set(mr.get().max(on.len()));
        (on == ["primary"] && c.holder().as_deref() == Some("primary")).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "no failback after the heal{}",
        c.diagnostics()
    );
    let failback = c.moved_after(healed, "primary").expect("failback recorded");
    let changes = c.holder_changes();
    let max_running = max_running.get();
    println!(
        "witness partition: failover {} ms after the cut, failback {} ms after the heal, {} moves, \
         at most {max_running} agents running the group at once (sampled)",
        failover.as_millis(),
        failback.as_millis(),
        changes.len()
    );
    assert_eq!(changes.len(), 2, "one move each way: {changes:?}");
    assert!(max_running <= 1, "two agents ran the group at once");
    // The primary made no assign call while cut off.
    assert_eq!(c.assign_calls(), 2);
}
