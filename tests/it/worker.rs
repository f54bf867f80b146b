//! The sync worker against the emulator: a requested run, coalescing of requests for a
//! tenant that is already queued or running, and shutdown in the middle of a run.

use std::sync::Arc;
use std::time::Duration;

use ms365_gateway::TenantId;
use ms365_gateway::config::Config;
use ms365_gateway::store::{RunStatus, RunTrigger};
use ms365_gateway::sync::{
    LeaseConfig, LeaseError, RequestOutcome, RunFailure, SyncHandle, SyncWorker,
};
use ms365_stand_ins::emulator::{Faults, NewUser, RouteClass};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{acme, until};
use crate::sso::{SsoWorld, WorldOptions};

async fn world() -> SsoWorld {
    let w = SsoWorld::new(WorldOptions::default()).await;
    w.settings(|s| s.users.enabled = true).await;
    w
}

fn start(w: &SsoWorld) -> (SyncHandle, CancellationToken, JoinHandle<()>) {
    let config = Config::load(&w.setup.path("gateway.toml"), Vec::new()).unwrap();
    let token = CancellationToken::new();
    let worker = SyncWorker::new(
        Arc::new(config),
        w.store.clone(),
        w.keyring.clone(),
        token.clone(),
    );
    let handle = worker.handle();
    (handle, token, tokio::spawn(worker.run()))
}

/// A world syncing users, photos and personal contacts.
async fn with_photos_and_contacts() -> SsoWorld {
    let w = SsoWorld::new(WorldOptions::default()).await;
    w.settings(|s| {
        s.users.enabled = true;
        s.users.sync_photo = true;
        s.personal_contacts.enabled = true;
    })
    .await;
    w
}

/// Asks for a run of `acme` and waits for its result.
async fn requested(handle: &SyncHandle) -> Arc<ms365_gateway::sync::RunResult> {
    handle
        .request(&acme(), RunTrigger::Api)
        .unwrap()
        .wait()
        .await
}

fn slow_delta(w: &SsoWorld, latency: Duration) {
    w.emulator.emulator.set_faults(
        RouteClass::Delta,
        Faults {
            latency,
            ..Faults::default()
        },
    );
}

#[tokio::test]
async fn requested_run_creates_pbx_users() {
    let w = world().await;
    let (handle, token, task) = start(&w);
    let ticket = handle.request(&acme(), RunTrigger::Api).unwrap();
    assert_eq!(ticket.outcome, RequestOutcome::Queued);
    let result = ticket.wait().await;
    let summary = result.as_ref().as_ref().expect("run succeeds");
    assert_eq!(summary.users.status, RunStatus::Succeeded);
    assert_eq!(summary.trigger, RunTrigger::Api);
    assert!(summary.photos.is_none(), "photo sync is off");
    let synced = w.store.pbx_users(&acme()).await.unwrap();
    assert!(synced.len() >= 6, "{} PBX users", synced.len());
    let runs = w.store.sync_runs(&acme(), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger, RunTrigger::Api);
    assert!(!handle.is_busy(&acme()));

    // An unknown tenant fails without stopping the worker.
    let err = handle
        .request(&TenantId::from_static("nobody"), RunTrigger::Api)
        .unwrap()
        .wait()
        .await;
    assert!(err.is_err());
    let again = handle
        .request(&acme(), RunTrigger::Manual)
        .unwrap()
        .wait()
        .await;
    assert!(again.is_ok(), "{again:?}");

    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("worker stops")
        .unwrap();
    assert!(handle.request(&acme(), RunTrigger::Api).is_err());
}

#[tokio::test]
async fn requests_for_a_busy_tenant_are_coalesced() {
    let w = world().await;
    slow_delta(&w, Duration::from_millis(500));
    let (handle, token, task) = start(&w);
    let first = handle.request(&acme(), RunTrigger::Api).unwrap();
    assert_eq!(first.outcome, RequestOutcome::Queued);
    let second = handle.request(&acme(), RunTrigger::Manual).unwrap();
    let third = handle.request(&acme(), RunTrigger::Cli).unwrap();
    for t in [&second, &third] {
        assert!(
            matches!(
                t.outcome,
                RequestOutcome::CoalescedIntoQueued | RequestOutcome::CoalescedIntoRunning
            ),
            "{:?}",
            t.outcome
        );
    }
    let a = first.wait().await;
    let b = second.wait().await;
    let c = third.wait().await;
    let id =
        |r: &Arc<ms365_gateway::sync::RunResult>| r.as_ref().as_ref().unwrap().users.run_id.clone();
    assert_eq!(id(&a), id(&b));
    assert_eq!(id(&a), id(&c));
    // One run answered all three, with the first request's trigger.
    let runs = w.store.sync_runs(&acme(), 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger, RunTrigger::Api);

    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("worker stops")
        .unwrap();
}

#[tokio::test]
async fn shutdown_interrupts_a_run_and_a_rerun_completes() {
    let w = world().await;
    slow_delta(&w, Duration::from_secs(30));
    let (handle, token, task) = start(&w);
    let ticket = handle.request(&acme(), RunTrigger::Api).unwrap();
    // Wait (by condition, bounded) until the run is recorded as running.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let runs = w.store.sync_runs(&acme(), 10).await.unwrap();
            if runs.iter().any(|r| r.status == RunStatus::Running) {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the run starts");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the worker ends promptly")
        .unwrap();
    let result = ticket.wait().await;
    assert!(result.is_err(), "{result:?}");

    // A new worker (a restarted gateway) completes the sync.
    slow_delta(&w, Duration::ZERO);
    let (handle, token, task) = start(&w);
    let result = requested(&handle).await;
    let summary = result.as_ref().as_ref().expect("the rerun succeeds");
    assert_eq!(summary.users.status, RunStatus::Succeeded);
    assert!(w.store.pbx_users(&acme()).await.unwrap().len() >= 6);
    let runs = w.store.sync_runs(&acme(), 10).await.unwrap();
    assert!(
        runs.iter().all(|r| r.status != RunStatus::Running),
        "{runs:?}"
    );
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn the_run_record_carries_photos_and_contacts() {
    let w = with_photos_and_contacts().await;
    let (handle, token, task) = start(&w);
    let result = requested(&handle).await;
    let summary = result.as_ref().as_ref().expect("run succeeds");
    let photos = summary.photos.as_ref().expect("photos ran");
    let contacts = summary.contacts.as_ref().expect("contacts ran");
    assert!(photos.downloaded > 0 && contacts.created > 0, "{summary:?}");

    let run = w
        .store
        .sync_run(&summary.users.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.counts["photos"].updated, photos.downloaded as u64);
    assert_eq!(run.counts["contacts"].created, contacts.created as u64);
    assert!(run.counts["users"].created > 0);
    assert_eq!(run.phase, "succeeded", "the phase ends equal to the status");
    assert!(run.finished_at.is_some());
    // The summary's report describes the whole run, as the record does.
    assert_eq!(run.graph_requests, summary.users.graph_requests);
    assert!(run.graph_requests > photos.graph_requests + contacts.graph_requests);
    assert_eq!(summary.users.counts, run.counts);
    token.cancel();
    task.await.unwrap();
}

/// Photos answer slowly, so the run is seen in its photos phase.
fn slow_photos(w: &SsoWorld, latency: Duration) {
    for class in [RouteClass::Photos, RouteClass::Batch] {
        let faults = Faults {
            latency,
            ..Faults::default()
        };
        w.emulator.emulator.set_faults(class, faults);
    }
}

/// The run record describes the whole run: `running` (no `finished_at`) while the photos
/// phase is still reading, so "sync now" in that window joins the running run; the end
/// comes only after the last phase.
#[tokio::test]
async fn a_run_reads_running_until_its_last_phase_ends() {
    let w = world().await;
    w.settings(|s| s.users.sync_photo = true).await;
    slow_photos(&w, Duration::from_millis(300));
    let (handle, token, task) = start(&w);
    let ticket = handle.request(&acme(), RunTrigger::Api).unwrap();
    until("the photos phase", || async {
        let runs = w.store.sync_runs(&acme(), 1).await.unwrap();
        runs.first().is_some_and(|r| r.phase == "photos")
    })
    .await;
    let during = w.store.sync_runs(&acme(), 1).await.unwrap().remove(0);
    assert_eq!(during.status, RunStatus::Running, "{during:?}");
    assert!(during.finished_at.is_none(), "{during:?}");
    assert!(during.counts["users"].created > 0, "users phase recorded");
    let again = handle.request(&acme(), RunTrigger::Manual).unwrap();
    assert_eq!(again.outcome, RequestOutcome::CoalescedIntoRunning);

    let result = ticket.wait().await;
    let summary = result.as_ref().as_ref().expect("run succeeds");
    assert_eq!(summary.users.status, RunStatus::Succeeded);
    let after = w.store.sync_run(&during.id).await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.phase.as_str()),
        (RunStatus::Succeeded, "succeeded")
    );
    assert!(after.finished_at.is_some() && after.counts.contains_key("photos"));
    token.cancel();
    task.await.unwrap();
}

/// A later phase that fails fails the run (what the users phase applied stands).
#[tokio::test]
async fn a_failed_later_phase_fails_the_run() {
    let w = world().await;
    w.settings(|s| s.users.sync_photo = true).await;
    let unavailable = Faults {
        rate_503: 1.0,
        retry_after: Some(0.0),
        ..Faults::default()
    };
    w.emulator
        .emulator
        .set_faults(RouteClass::Batch, unavailable);
    let (handle, token, task) = start(&w);
    let result = requested(&handle).await;
    let summary = result
        .as_ref()
        .as_ref()
        .expect("the run ends with a record");
    assert!(summary.photo_error.is_some(), "{summary:?}");
    assert_eq!(summary.users.status, RunStatus::Failed);
    let run = w
        .store
        .sync_run(&summary.users.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.status, run.phase.as_str()),
        (RunStatus::Failed, "failed")
    );
    assert!(
        run.message.as_deref().unwrap_or("").contains("photos"),
        "{run:?}"
    );
    assert!(run.counts["users"].created > 0, "the users phase stands");
    assert!(!w.store.pbx_users(&acme()).await.unwrap().is_empty());
    token.cancel();
    task.await.unwrap();
}

/// Users without an Exchange mailbox are normal: counted as "no mailbox", never listed as
/// errors, and asked once per run.
#[tokio::test]
async fn mailbox_less_users_are_counted_not_reported() {
    let w = with_photos_and_contacts().await;
    let emu = &w.emulator.emulator;
    let unlicensed: Vec<String> = (0..3)
        .map(|i| {
            let user = emu.add_user(
                crate::entra::DIRECTORY,
                NewUser {
                    user_principal_name: format!("unlicensed{i}@contoso.onmicrosoft.com"),
                    display_name: format!("Unlicensed User {i}"),
                    has_mailbox: Some(false),
                    ..NewUser::default()
                },
            );
            user.id
        })
        .collect();
    let (handle, token, task) = start(&w);
    let result = requested(&handle).await;
    let summary = result.as_ref().as_ref().expect("run succeeds");
    let contacts = summary.contacts.as_ref().expect("contacts ran");
    assert_eq!(contacts.no_mailbox, unlicensed.len(), "{contacts:?}");
    let run = w
        .store
        .sync_run(&summary.users.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.counts["contacts"].no_mailbox, unlicensed.len() as u64);
    assert!(
        run.errors.iter().all(|e| !unlicensed.contains(&e.key)),
        "no mailbox is not an error: {:?}",
        run.errors
    );
    // Only the mailbox-less users in scope: one $batch asks all three, and none is asked
    // again on its own.
    w.settings(|s| {
        s.personal_contacts.sync_type = ms365_gateway::settings::SyncType::Include;
        s.personal_contacts.selected_users = unlicensed.clone();
    })
    .await;
    let result = requested(&handle).await;
    let summary = result.as_ref().as_ref().expect("run succeeds");
    let contacts = summary.contacts.as_ref().expect("contacts ran");
    assert_eq!(contacts.no_mailbox, unlicensed.len(), "{contacts:?}");
    assert_eq!(contacts.graph_requests, 1, "one batch, no second asking");
    token.cancel();
    task.await.unwrap();
}

fn start_instance(
    w: &SsoWorld,
    owner: &str,
    ttl: Duration,
    tick: Duration,
) -> (SyncHandle, CancellationToken, JoinHandle<()>) {
    let config = Config::load(&w.setup.path("gateway.toml"), Vec::new()).unwrap();
    let token = CancellationToken::new();
    let lease = LeaseConfig {
        owner: owner.into(),
        ttl,
    };
    let worker = SyncWorker::new(
        Arc::new(config),
        w.store.clone(),
        w.keyring.clone(),
        token.clone(),
    )
    .with_lease(lease)
    .with_schedule_tick(tick);
    let handle = worker.handle();
    (handle, token, tokio::spawn(worker.run()))
}

#[tokio::test]
async fn two_instances_never_sync_a_tenant_at_once() {
    let w = world().await;
    slow_delta(&w, Duration::from_millis(400));
    let hour = Duration::from_secs(3600);
    let (a, stop_a, task_a) = start_instance(&w, "instance-a", Duration::from_secs(30), hour);
    let (b, stop_b, task_b) = start_instance(&w, "instance-b", Duration::from_secs(30), hour);
    let first = a.request(&acme(), RunTrigger::Api).unwrap();
    until("instance a to hold the lease", || async {
        w.store
            .sync_lease(&acme())
            .await
            .unwrap()
            .is_some_and(|l| l.owner == "instance-a")
    })
    .await;
    let refused = b.request(&acme(), RunTrigger::Api).unwrap().wait().await;
    let reason = refused.as_ref().as_ref().unwrap_err();
    assert!(
        matches!(reason, RunFailure::Lease(LeaseError::HeldBy { owner }) if owner == "instance-a"),
        "{reason}"
    );
    let done = first.wait().await;
    assert!(done.as_ref().is_ok(), "{done:?}");
    assert_eq!(
        w.store.sync_runs(&acme(), 10).await.unwrap().len(),
        1,
        "one run"
    );
    assert!(
        w.store.sync_lease(&acme()).await.unwrap().is_none(),
        "released at the end"
    );
    for (stop, task) in [(stop_a, task_a), (stop_b, task_b)] {
        stop.cancel();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn another_instance_finishes_a_dead_owners_run() {
    let w = world().await;
    // What a SIGKILLed instance leaves: its run `running`, its lease about to expire.
    let dead_run = w
        .store
        .create_sync_run(&acme(), RunTrigger::Api)
        .await
        .unwrap();
    let expires = ms365_gateway::store::now_epoch() + 1;
    assert!(
        w.store
            .acquire_sync_lease(&acme(), "dead", expires)
            .await
            .unwrap()
    );
    let tick = Duration::from_millis(50);
    let (_b, stop, task) = start_instance(&w, "survivor", Duration::from_secs(30), tick);
    until("a run to finish the work", || async {
        let runs = w.store.sync_runs(&acme(), 10).await.unwrap();
        runs.iter().any(|r| r.status == RunStatus::Succeeded)
    })
    .await;
    let runs = w.store.sync_runs(&acme(), 10).await.unwrap();
    let dead = runs.iter().find(|r| r.id == dead_run).unwrap();
    assert_ne!(dead.status, RunStatus::Running, "the dead run is closed");
    let users = w.store.pbx_users(&acme()).await.unwrap();
    assert!(users.len() >= 6, "the survivor synced the directory");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_scheduled_slot_goes_to_one_instance() {
    let w = world().await;
    let slot = 1_800_000_000;
    let acme = acme();
    let claims =
        futures_util::future::join_all((0..3).map(|_| w.store.claim_schedule_slot(&acme, slot)))
            .await;
    let won = claims.iter().filter(|c| *c.as_ref().unwrap()).count();
    assert_eq!(won, 1, "{claims:?}");
    assert!(!w.store.claim_schedule_slot(&acme, slot - 60).await.unwrap());
    assert!(w.store.claim_schedule_slot(&acme, slot + 60).await.unwrap());
}
