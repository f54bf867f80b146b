//! Runs answering change notifications (issue #15) read and push only what changed: the
//! users delta is planned against the rows of the users it returned, and the PBX phase
//! sends only those users — while a creation still gets a free number, a deletion after
//! the grace period still reaches the PBX, and a focused push that fails makes the next
//! run compare the whole record. The sync phases run here directly (as the worker runs
//! them) against the Microsoft 365 emulator and the PortSIP stand-in.

use std::time::Duration;

use ms365_gateway::ObjectId;
use ms365_gateway::store::{RunStatus, RunTrigger};
use ms365_gateway::sync::LISTED_KIND;
use ms365_gateway::sync::{PushFocus, push_to_pbx};
use ms365_gateway::sync::{SyncOptions, Targets, run_phases};
use ms365_stand_ins::emulator::{NewUser, UserPatch};
use ms365_stand_ins::portsip_emulator::PbxFaults;
use serde_json::Value;

use crate::common::acme;
use crate::entra::DIRECTORY;
use crate::pbx::{PbxWorld, field, small};
use crate::sync::regular;

/// The options of a run started by change notifications about users.
fn targeted(delete_after: Option<Duration>) -> SyncOptions {
    SyncOptions {
        trigger: RunTrigger::Notification,
        targets: Some(Targets::default()),
        delete_after,
        ..SyncOptions::default()
    }
}

fn rename(pw: &PbxWorld, oid: &str, name: &str) {
    let patch = UserPatch {
        display_name: Some(name.into()),
        ..UserPatch::default()
    };
    pw.w.em().update_user(DIRECTORY, oid, patch);
}

/// The PBX user bound to `oid`, if any.
fn on_pbx(pw: &PbxWorld, oid: &str) -> Option<Value> {
    (pw.pbx_users().into_values()).find(|u| field(u, "ms365_binding").eq_ignore_ascii_case(oid))
}

fn display_name(pw: &PbxWorld, oid: &str) -> String {
    let user = on_pbx(pw, oid).unwrap_or_else(|| panic!("{oid} is on the PBX"));
    field(&user, "display_name").to_string()
}

/// Renames `oid` in Microsoft 365 and applies it to the record only (no PBX phase), so
/// the record and the PBX differ for that user.
async fn record_only_rename(pw: &PbxWorld, oid: &str, name: &str) {
    rename(pw, oid, name);
    let summary = run_phases(&pw.w.ctx(), SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.users.status, RunStatus::Succeeded, "{summary:#?}");
}

#[tokio::test]
async fn a_targeted_run_pushes_the_changed_users_only() {
    let pw = PbxWorld::new(small(), Vec::new()).await;
    pw.run_ok().await;
    let people = regular(pw.w.em());
    let (changed, behind) = (&people[1], &people[2]);
    record_only_rename(&pw, &behind.id, "Behind Person").await;

    rename(&pw, &changed.id, "Changed Person");
    let hire = pw.w.em().add_user(
        DIRECTORY,
        NewUser {
            user_principal_name: "targeted.hire@contoso.onmicrosoft.com".into(),
            display_name: "Targeted Hire".into(),
            given_name: Some("Targeted".into()),
            surname: Some("Hire".into()),
            ..NewUser::default()
        },
    );
    let summary = pw.run_with(targeted(None)).await;
    assert_eq!(summary.users.status, RunStatus::Succeeded, "{summary:#?}");
    let pbx = summary.pbx.expect("the PBX phase ran");
    assert_eq!((pbx.users.created, pbx.users.updated), (1, 1), "{pbx:#?}");
    assert_eq!(display_name(&pw, &changed.id), "Changed Person");
    assert!(
        on_pbx(&pw, &hire.id).is_some(),
        "the new hire is on the PBX"
    );
    assert_ne!(
        display_name(&pw, &behind.id),
        "Behind Person",
        "a user the notifications did not name is left to the next full comparison"
    );

    // The scheduled run compares the whole record and catches up.
    pw.run_ok().await;
    assert_eq!(display_name(&pw, &behind.id), "Behind Person");
    pw.assert_pbx_matches_record().await;
    pw.assert_no_rejections();
}

#[tokio::test]
async fn a_deletion_after_the_grace_period_reaches_the_pbx_from_targeted_runs() {
    let pw = PbxWorld::new(small(), Vec::new()).await;
    pw.run_ok().await;
    let gone = regular(pw.w.em()).remove(3);
    pw.w.em().delete_user(DIRECTORY, &gone.id);

    let grace = Some(Duration::ZERO);
    let first = pw.run_with(targeted(grace)).await;
    assert_eq!(first.users.status, RunStatus::Succeeded, "{first:#?}");
    let user = on_pbx(&pw, &gone.id).expect("disabled first, not destroyed");
    assert_eq!(user["enabled"], Value::Bool(false));

    // Nothing new from Graph: the grace period alone deletes, found by the database.
    let second = pw.run_with(targeted(grace)).await;
    assert_eq!(second.users.status, RunStatus::Succeeded, "{second:#?}");
    assert_eq!(second.users.counts["users"].deleted, 1, "{second:#?}");
    assert!(on_pbx(&pw, &gone.id).is_none(), "destroyed on the PBX");
    let record =
        pw.w.store
            .pbx_user_by_oid(&acme(), &ObjectId::new(&gone.id))
            .await
            .unwrap();
    assert!(record.is_none(), "gone from the record");
    pw.assert_pbx_matches_record().await;
}

#[tokio::test]
async fn a_failed_focused_push_makes_the_next_run_compare_everything() {
    let pw = PbxWorld::new(small(), Vec::new()).await;
    pw.run_ok().await;
    let person = regular(pw.w.em()).remove(1);
    record_only_rename(&pw, &person.id, "Refused Once").await;

    let ctx = pw.ctx();
    let target = ctx.pbx.clone().expect("a PBX target");
    let focus = PushFocus {
        users: vec![ObjectId::new(&person.id)],
        contacts: false,
    };
    pw.emu().set_faults(PbxFaults {
        class: Some("users".into()),
        fail_next: 1,
        fail_status: 400,
        ..PbxFaults::default()
    });
    let report = push_to_pbx(&(&ctx).into(), &target, None, Some(&focus), false)
        .await
        .unwrap();
    assert_eq!(report.users.failed, 1, "{report:#?}");
    let listed = pw.w.store.sync_cursor(&acme(), LISTED_KIND).await.unwrap();
    assert!(listed.is_none(), "the next run lists the PBX");
    pw.emu().set_faults(PbxFaults::default());

    // A targeted run with no user change still repairs what the failed push left.
    let summary = pw.run_with(targeted(None)).await;
    assert_eq!(summary.users.status, RunStatus::Succeeded, "{summary:#?}");
    assert_eq!(display_name(&pw, &person.id), "Refused Once");
}
